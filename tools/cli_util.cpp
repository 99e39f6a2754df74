#include "tools/cli_util.h"

#include <ATen/Parallel.h>
#include <dlfcn.h>

#include <algorithm>
#include <cmath>
#include <iostream>
#include <thread>

#include "core/errors.h"

namespace dtrain::cli {

bool parse_or_help(cxxopts::Options& options, int argc, char** argv, cxxopts::ParseResult& out) {
  try {
    out = options.parse(argc, argv);
  } catch (const cxxopts::exceptions::exception& e) {
    throw ConfigError(std::string(e.what()) + " (see: " + options.program() + " --help)");
  }
  if (out.count("help")) {
    std::cout << options.help() << std::endl;
    return false;
  }
  if (!out.unmatched().empty()) {
    throw ConfigError("unexpected argument '" + out.unmatched().front() + "' (see: " +
                      options.program() + " --help)");
  }
  return true;
}

std::string data_dir_flag(const cxxopts::ParseResult& result) {
  std::string dir, folder;
  if (result.count("data-dir")) dir = result["data-dir"].as<std::string>();
  if (result.count("data-folder")) folder = result["data-folder"].as<std::string>();
  if (!dir.empty() && !folder.empty() && dir != folder) {
    throw ConfigError("--data-dir '" + dir + "' and --data-folder '" + folder +
                      "' disagree (they are aliases; give one)");
  }
  return dir.empty() ? folder : dir;
}

int64_t int_flag(const cxxopts::ParseResult& result, const std::string& name) {
  const std::string text = result[name].as<std::string>();
  try {
    size_t used = 0;
    const long long v = std::stoll(text, &used, 10);
    if (used == text.size()) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError("--" + name + ": expected a whole number, got '" + text + "'");
}

double double_flag(const cxxopts::ParseResult& result, const std::string& name) {
  const std::string text = result[name].as<std::string>();
  try {
    size_t used = 0;
    const double v = std::stod(text, &used);
    if (used == text.size() && std::isfinite(v)) return v;
  } catch (const std::exception&) {
  }
  throw ConfigError("--" + name + ": expected a finite number, got '" + text + "'");
}

int configure_threads(int threads, int local_ranks) {
  if (threads <= 0) {
    const int cores = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    threads = std::max(1, cores / std::max(1, local_ranks));
  }
  at::set_num_threads(threads);
  // LibTorch's GEMMs run on OpenBLAS's own thread pool, which at::set_num_threads does not size.
  // Without this, two ranks on two cores run four BLAS threads and a step takes 2.5x longer.
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
  return threads;
}

}  // namespace dtrain::cli
