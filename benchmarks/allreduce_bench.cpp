// Allreduce benchmark in the style of nccl-tests' all_reduce_perf: a size sweep, our ring against
// MPI_Allreduce in the same run, results checked outside the timed loop.
//   mpirun -np N allreduce_bench [--min-bytes 8] [--max-bytes 64M] [--iters 20] [--warmup 5]
//                                [--repeats 5] [--dtype float|double|int|half] [--json PATH]
// Each size is timed --repeats times for each algorithm, alternating ring and MPI so noise hits
// both, each repeat the mean of --iters calls (the slowest rank's); the table shows the median
// repeat. Columns: size (bytes), count (elements), type, then for each algorithm time_us, algbw
// and busbw (GB/s; busbw = algbw * 2(N-1)/N) and the error against the closed-form expectation;
// then the ring/MPI busbw ratio. With every rank on one host, a third column times what training
// uses there: the communicator's reduce buffer (shared memory, reduced in place), with its own
// ratio to MPI. Exit status 1 if any result is wrong.
#include <mpi.h>
#include <torch/types.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <string>
#include <vector>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "benchmarks/bench_info.h"
#include "distributed/backend/mpi/mpi_communicator.h"

using dtrain::distributed::AllreduceAlgorithm;
using dtrain::distributed::MpiCommunicator;

namespace {

// "64", "1K", "64M", "1G" -> bytes; throws std::invalid_argument for anything else.
size_t parse_size(const char* text) {
  char* end = nullptr;
  double v = std::strtod(text, &end);
  if (end == text || !std::isfinite(v) || v < 0) {
    throw std::invalid_argument(std::string("expected a size like 64, 1K, 64M, got '") + text +
                                "'");
  }
  if (*end == 'K' || *end == 'k')
    v *= 1024, ++end;
  else if (*end == 'M' || *end == 'm')
    v *= 1024 * 1024, ++end;
  else if (*end == 'G' || *end == 'g')
    v *= 1024.0 * 1024 * 1024, ++end;
  if (*end != '\0' || v > 1e12) {
    throw std::invalid_argument(std::string("expected a size like 64, 1K, 64M, got '") + text +
                                "'");
  }
  return static_cast<size_t>(v);
}

struct Result {
  double time_us = 0, algbw = 0, busbw = 0, error = 0;
  std::vector<double> repeats_us;  // every repeat, for the JSON
};

// Seconds per call over `iters` calls, the slowest rank's.
double time_calls(MpiCommunicator& comm, torch::Tensor& buf, int iters) {
  MPI_Barrier(MPI_COMM_WORLD);
  const double t0 = MPI_Wtime();
  for (int i = 0; i < iters; ++i) comm.allreduce(buf);
  double elapsed = (MPI_Wtime() - t0) / iters;
  MPI_Allreduce(MPI_IN_PLACE, &elapsed, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  return elapsed;
}

double median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t m = v.size() / 2;
  return v.size() % 2 ? v[m] : (v[m - 1] + v[m]) / 2;
}

// Rank-filled input (element i of rank r: r + 1 + i % 7): the sum is n(n+1)/2 + n*(i % 7).
// `elapsed`: the repeats' seconds per call.
Result verify(MpiCommunicator& comm, torch::Tensor& buf, const std::vector<double>& elapsed_all) {
  const int n = comm.size(), r = comm.rank();
  auto fill = [&] {
    auto idx = torch::arange(buf.numel(), torch::kLong).remainder(7);
    buf.copy_((idx + (r + 1)).to(buf.scalar_type()));
  };
  const double elapsed = median(elapsed_all);
  // Verify outside the timed loop.
  fill();
  comm.allreduce(buf);
  auto idx = torch::arange(buf.numel(), torch::kLong).remainder(7).to(torch::kDouble);
  auto expected = idx * n + n * (n + 1) / 2.0;
  double err = buf.numel() ? (buf.to(torch::kDouble) - expected).abs().max().item<double>() : 0.0;
  MPI_Allreduce(MPI_IN_PLACE, &err, 1, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD);
  Result res;
  res.time_us = elapsed * 1e6;
  const double bytes = static_cast<double>(buf.numel() * buf.element_size());
  res.algbw = elapsed > 0 ? bytes / elapsed / 1e9 : 0;
  res.busbw = res.algbw * 2.0 * (n - 1) / n;
  res.error = err;
  for (double e : elapsed_all) res.repeats_us.push_back(e * 1e6);
  return res;
}

}  // namespace

int main(int argc, char** argv) {
  cxxopts::Options options("allreduce_bench",
                           "nccl-tests-style allreduce sweep: our ring vs MPI_Allreduce");
  options.add_options()("min-bytes", "smallest message (K, M, G suffixes)",
                        cxxopts::value<std::string>()->default_value("8"))(
      "max-bytes", "largest message", cxxopts::value<std::string>()->default_value("64M"))(
      "iters", "timed iterations per size", cxxopts::value<int>()->default_value("20"))(
      "warmup", "untimed iterations per size", cxxopts::value<int>()->default_value("5"))(
      "repeats", "timed repeats per size and algorithm (the median is shown)",
      cxxopts::value<int>()->default_value("5"))(
      "dtype", "float, double, int or half", cxxopts::value<std::string>()->default_value("float"))(
      "json", "also write the results to this file",
      cxxopts::value<std::string>()->default_value(""))("h,help", "show this help");
  size_t min_bytes = 0, max_bytes = 0;
  int iters = 0, warmup = 0, repeats = 0;
  std::string dtype, json_path;
  try {
    const auto r = dtrain::bench::parse_command_line(options, argc, argv);
    min_bytes = parse_size(r["min-bytes"].as<std::string>().c_str());
    max_bytes = parse_size(r["max-bytes"].as<std::string>().c_str());
    iters = r["iters"].as<int>();
    warmup = r["warmup"].as<int>();
    repeats = r["repeats"].as<int>();
    dtype = r["dtype"].as<std::string>();
    json_path = r["json"].as<std::string>();
    if (iters < 1 || iters > 1'000'000 || warmup < 0 || warmup > 1'000'000 || repeats < 1 ||
        repeats > 1000) {
      throw std::invalid_argument("--iters 1..1000000, --warmup 0..1000000, --repeats 1..1000");
    }
    if (min_bytes < 1 || min_bytes > max_bytes || max_bytes > (size_t{4} << 30)) {
      throw std::invalid_argument("expected 1 <= --min-bytes <= --max-bytes <= 4G");
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "allreduce_bench: %s (see --help)\n", e.what());
    return 2;
  }
  const torch::ScalarType type = dtype == "double" ? torch::kDouble
                                 : dtype == "int"  ? torch::kInt
                                 : dtype == "half" ? torch::kHalf
                                                   : torch::kFloat;
  MpiCommunicator comm(AllreduceAlgorithm::kRing);
  const int n = comm.size();
  const bool root = comm.rank() == 0;
  const size_t elem = c10::elementSize(type);
  const bool shared = n > 1 && comm.local_size() == n && type != torch::kHalf;
  if (root) {
    std::printf(
        "# allreduce_bench: %d ranks, dtype %s, median of %d repeats of %d iterations after %d "
        "warm-up\n",
        n, dtype.c_str(), repeats, iters, warmup);
    std::printf("# %10s %10s %6s | %10s %8s %8s %8s | %10s %8s %8s %8s | %6s", "size", "count",
                "type", "ring_us", "algbw", "busbw", "error", "mpi_us", "algbw", "busbw", "error",
                "ratio");
    if (shared) std::printf(" | %10s %8s %8s | %6s", "shm_us", "busbw", "error", "ratio");
    std::printf("\n");
  }
  nlohmann::json rows = nlohmann::json::array();
  bool wrong = false;
  double ratio_log_sum = 0;
  int ratio_rows = 0;
  std::vector<size_t> slower_sizes;  // from 64 KiB: ring below MPI_Allreduce's bus bandwidth
  for (size_t bytes = min_bytes; bytes <= max_bytes; bytes *= 2) {
    const int64_t count = static_cast<int64_t>(std::max<size_t>(1, bytes / elem));
    auto buf = torch::zeros({count}, type);
    const int it = bytes >= (size_t{16} << 20) ? std::max(3, iters / 4) : iters;
    for (auto algo : {AllreduceAlgorithm::kRing, AllreduceAlgorithm::kMpi}) {
      comm.set_algorithm(algo);
      for (int i = 0; i < warmup; ++i) comm.allreduce(buf);
    }
    torch::Tensor shm_buf;
    if (shared) {
      comm.set_algorithm(AllreduceAlgorithm::kRing);  // reduce buffers are shared for the ring
      shm_buf = comm.reduce_buffer(count, type);
      if (!comm.in_shared_memory(shm_buf)) {
        std::fprintf(stderr, "allreduce_bench: the reduce buffer is not in shared memory\n");
        return 1;
      }
      for (int i = 0; i < warmup; ++i) comm.allreduce(shm_buf);
    }
    std::vector<double> ring_s, mpi_s, shm_s;
    for (int rep = 0; rep < repeats; ++rep) {
      comm.set_algorithm(AllreduceAlgorithm::kRing);
      ring_s.push_back(time_calls(comm, buf, it));
      if (shared) shm_s.push_back(time_calls(comm, shm_buf, it));
      comm.set_algorithm(AllreduceAlgorithm::kMpi);
      mpi_s.push_back(time_calls(comm, buf, it));
    }
    comm.set_algorithm(AllreduceAlgorithm::kRing);
    Result ring = verify(comm, buf, ring_s);
    comm.set_algorithm(AllreduceAlgorithm::kMpi);
    Result mpi = verify(comm, buf, mpi_s);
    comm.set_algorithm(AllreduceAlgorithm::kRing);
    Result shm = shared ? verify(comm, shm_buf, shm_s) : Result{};
    const double tolerance = type == torch::kHalf ? 0.5 : 1e-6;
    wrong |= ring.error > tolerance || mpi.error > tolerance || shm.error > tolerance;
    const double shm_ratio = mpi.busbw > 0 ? shm.busbw / mpi.busbw : 0;
    const double ratio = mpi.busbw > 0 ? ring.busbw / mpi.busbw : 0;
    if (bytes >= (size_t{64} << 10)) {
      ratio_log_sum += std::log(ratio), ++ratio_rows;
      if (ratio < 1) slower_sizes.push_back(bytes);
    }
    if (root) {
      std::printf(
          "  %10zu %10lld %6s | %10.1f %8.3f %8.3f %8.1e | %10.1f %8.3f %8.3f %8.1e | %5.2fx",
          bytes, static_cast<long long>(count), dtype.c_str(), ring.time_us, ring.algbw, ring.busbw,
          ring.error, mpi.time_us, mpi.algbw, mpi.busbw, mpi.error, ratio);
      if (shared) {
        std::printf(" | %10.1f %8.3f %8.1e | %5.2fx", shm.time_us, shm.busbw, shm.error, shm_ratio);
      }
      std::printf("\n");
      rows.push_back({{"bytes", bytes},
                      {"count", count},
                      {"type", dtype},
                      {"ring",
                       {{"time_us", ring.time_us},
                        {"repeats_us", ring.repeats_us},
                        {"algbw", ring.algbw},
                        {"busbw", ring.busbw},
                        {"error", ring.error}}},
                      {"mpi",
                       {{"time_us", mpi.time_us},
                        {"repeats_us", mpi.repeats_us},
                        {"algbw", mpi.algbw},
                        {"busbw", mpi.busbw},
                        {"error", mpi.error}}},
                      {"ratio", ratio}});
      if (shared) {
        rows.back()["shared_memory"] = {{"time_us", shm.time_us}, {"repeats_us", shm.repeats_us},
                                        {"algbw", shm.algbw},     {"busbw", shm.busbw},
                                        {"error", shm.error},     {"ratio_to_mpi", shm_ratio}};
      }
    }
  }
  if (root) {
    if (ratio_rows) {
      std::printf("# ring/MPI_Allreduce busbw, geometric mean from 64 KiB up: %.2fx\n",
                  std::exp(ratio_log_sum / ratio_rows));
      std::string slower;
      for (size_t b : slower_sizes) slower += " " + std::to_string(b);
      std::printf("# sizes from 64 KiB where the ring is below MPI_Allreduce: %s\n",
                  slower.empty() ? "none" : slower.c_str());
    }
    std::printf("# results %s\n", wrong ? "WRONG" : "verified");
    if (!json_path.empty()) {
      char mpi_version[MPI_MAX_LIBRARY_VERSION_STRING];
      int length = 0;
      MPI_Get_library_version(mpi_version, &length);
      std::string mpi_library(mpi_version, static_cast<size_t>(std::max(0, length)));
      mpi_library.erase(mpi_library.find_last_not_of(std::string("\n\0", 2)) + 1);
      const nlohmann::json results = {{"ranks", n},
                                      {"repeats", repeats},
                                      {"iters", iters},
                                      {"rows", rows},
                                      {"ring_over_mpi_geomean_from_64k",
                                       ratio_rows ? std::exp(ratio_log_sum / ratio_rows) : 0.0},
                                      {"sizes_ring_below_mpi_from_64k", slower_sizes}};
      std::ofstream(json_path) << dtrain::bench::report("allreduce_bench", argc, argv, results,
                                                        {{"mpi", mpi_library}})
                                      .dump(2)
                               << "\n";
    }
  }
  return wrong ? 1 : 0;
}
