// The compute bound of one training epoch on this machine: the epoch's GEMM work (forward, weight
// gradients and input gradients of every layer but the first) divided by the sgemm rate measured
// now on all cores (1024^3; the faster of one GEMM on the BLAS's own threads and one
// single-threaded GEMM per core at once; the fastest of the repeats, as the epochs it is compared
// with are the fastest of theirs: with a median, a noisy minute made the bound slower and the
// ratio to it flattering). train_throughput.sh divides the measured epoch time by it.
//   compute_bound [--threads N] [--samples 60000] [--hidden-sizes 300,100] [--json FILE]
#include <torch/torch.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <fstream>
#include <vector>

#include <cxxopts.hpp>

#include "benchmarks/bench_info.h"
#include "core/blas.h"
#include "core/thread_team.h"

int main(int argc, char** argv) {
  cxxopts::Options options("compute_bound", "GEMM compute bound of one MNIST MLP epoch");
  options.add_options()("threads", "BLAS threads (0: all cores)",
                        cxxopts::value<int>()->default_value("0"))(
      "samples", "samples per epoch", cxxopts::value<int64_t>()->default_value("60000"))(
      "hidden-sizes", "hidden widths",
      cxxopts::value<std::vector<int64_t>>()->default_value("300,100"))(
      "repeats", "timed repeats (the fastest counts)", cxxopts::value<int>()->default_value("7"))(
      "json", "also write the results to this file",
      cxxopts::value<std::string>()->default_value(""))("h,help", "show this help");
  int threads = 0, repeats = 0;
  int64_t samples = 0;
  std::vector<int64_t> widths;
  std::string json_path;
  try {
    const auto r = dtrain::bench::parse_command_line(options, argc, argv);
    threads = r["threads"].as<int>();
    samples = r["samples"].as<int64_t>();
    widths = r["hidden-sizes"].as<std::vector<int64_t>>();
    repeats = r["repeats"].as<int>();
    json_path = r["json"].as<std::string>();
    if (threads < 0 || threads > 4096 || samples < 1 || repeats < 1 || repeats > 1000 ||
        widths.empty() ||
        std::any_of(widths.begin(), widths.end(), [](int64_t w) { return w < 1 || w > 65536; })) {
      throw std::invalid_argument(
          "--threads 0..4096, --samples >= 1, --repeats 1..1000, widths 1..65536");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "compute_bound: %s (see --help)\n", e.what());
    return 2;
  }
  if (threads == 0) threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  dtrain::set_compute_threads(threads);  // OpenBLAS on `threads`, no OpenMP teams

  // FLOPs per sample: 2*in*out for each layer's forward and weight gradient, and for the input
  // gradient of every layer but the first.
  std::vector<int64_t> dims = {784};
  dims.insert(dims.end(), widths.begin(), widths.end());
  dims.push_back(10);
  double per_sample = 0;
  for (size_t l = 0; l + 1 < dims.size(); ++l) {
    const double mac = static_cast<double>(dims[l]) * static_cast<double>(dims[l + 1]);
    per_sample += 2 * mac * (l == 0 ? 2 : 3);
  }
  const double epoch_flop = per_sample * static_cast<double>(samples);

  // The rate two ways, the faster counting: one GEMM on the BLAS's own `threads` threads, and one
  // single-threaded GEMM per thread at once (as the training step's team runs them, through the
  // same sgemm; the BLAS's own threading scaled 2 cores to 1.5x of one on some days here).
  const int64_t n = 1024;
  const int calls = 10;
  const double flop_per_call = 2.0 * n * n * n;
  const auto seconds_since = [](std::chrono::steady_clock::time_point t0) {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  };
  auto a = torch::randn({n, n}), b = torch::randn({n, n}), c = torch::empty({n, n});
  for (int i = 0; i < 3; ++i) at::mm_out(c, a, b);  // warm-up
  std::vector<double> threaded, per_thread;
  for (int rep = 0; rep < repeats; ++rep) {
    const auto t0 = std::chrono::steady_clock::now();
    for (int i = 0; i < calls; ++i) at::mm_out(c, a, b);
    threaded.push_back(flop_per_call * calls / seconds_since(t0) / 1e9);
  }
  dtrain::set_blas_threads(1);
  {
    dtrain::ThreadTeam team(threads);
    std::vector<torch::Tensor> as, bs, cs;
    for (int k = 0; k < threads; ++k) {
      as.push_back(torch::randn({n, n}));
      bs.push_back(torch::randn({n, n}));
      cs.push_back(torch::empty({n, n}));
    }
    const auto gemms = [&](int count) {
      team.run([&](int k) {
        for (int i = 0; i < count; ++i) {
          dtrain::sgemm(false, false, n, n, n, as[k].data_ptr<float>(), n, bs[k].data_ptr<float>(),
                        n, 0.0f, cs[k].data_ptr<float>(), n);
        }
      });
    };
    gemms(1);  // warm-up
    for (int rep = 0; rep < repeats; ++rep) {
      const auto t0 = std::chrono::steady_clock::now();
      gemms(calls);
      per_thread.push_back(flop_per_call * calls * threads / seconds_since(t0) / 1e9);
    }
  }
  const double best_threaded = *std::max_element(threaded.begin(), threaded.end());
  const double best_per_thread = *std::max_element(per_thread.begin(), per_thread.end());
  const double gflops = std::max(best_threaded, best_per_thread);
  const double bound = epoch_flop / (gflops * 1e9);
  std::printf(
      "# compute_bound: sgemm 1024^3 on %d thread(s): %.1f GFLOP/s (fastest of %d: one GEMM on "
      "%d BLAS threads %.1f, one single-threaded GEMM per thread at once %.1f)\n",
      threads, gflops, repeats, threads, best_threaded, best_per_thread);
  std::printf("# epoch: %.2f MFLOP/sample x %lld samples = %.1f GFLOP -> bound %.3f s\n",
              per_sample / 1e6, static_cast<long long>(samples), epoch_flop / 1e9, bound);
  if (!json_path.empty()) {
    const nlohmann::json results = {{"threads", threads},
                                    {"sgemm_gflops", gflops},
                                    {"sgemm_gflops_blas_threads", threaded},
                                    {"sgemm_gflops_one_per_thread", per_thread},
                                    {"flop_per_sample", per_sample},
                                    {"epoch_gflop", epoch_flop / 1e9},
                                    {"bound_seconds", bound}};
    std::ofstream(json_path) << dtrain::bench::report("compute_bound", argc, argv, results).dump(2)
                             << "\n";
  }
  return 0;
}
