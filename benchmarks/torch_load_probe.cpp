// An empty program linked with LibTorch: its run time is what loading LibTorch (and unloading it,
// static destructors included) costs any process. benchmarks/startup.sh times it in two builds:
// with LibTorch's libraries in their own load order, and with cmake/StartupLinkOrder.cmake's.
#include <ATen/Parallel.h>

int main() { return at::get_num_threads() > 0 ? 0 : 1; }
