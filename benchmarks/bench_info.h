// What makes benchmark runs comparable, for the C++ benchmarks' --json output: the machine,
// versions and command line, in the layout benchmarks/bench_report.py writes for the scripts.
#pragma once

#include <torch/version.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>

#include <cxxopts.hpp>
#include <nlohmann/json.hpp>

#include "dtrain/config.h"

namespace dtrain::bench {

inline std::string proc_field(const char* path, const std::string& prefix) {
  std::ifstream in(path);
  for (std::string line; std::getline(in, line);) {
    if (line.rfind(prefix, 0) == 0) {
      const auto colon = line.find(':');
      if (colon == std::string::npos) return "";
      const auto start = line.find_first_not_of(" \t", colon + 1);
      return start == std::string::npos ? "" : line.substr(start);
    }
  }
  return "";
}

/// The shared objects of this process whose file name contains "blas" or "dnnl" (oneDNN).
inline nlohmann::json loaded_blas() {
  nlohmann::json libs = nlohmann::json::array();
  std::ifstream maps("/proc/self/maps");
  for (std::string line; std::getline(maps, line);) {
    const auto slash = line.find('/');
    if (slash == std::string::npos) continue;
    const std::string path = line.substr(slash);
    if ((path.find("blas") != std::string::npos || path.find("dnnl") != std::string::npos) &&
        std::find(libs.begin(), libs.end(), path) == libs.end()) {
      libs.push_back(path);
    }
  }
  return libs;
}

/// The benchmarks' command line: prints the help and exits 0 for --help; throws
/// std::invalid_argument for an argument that is not an option (and cxxopts' errors for bad ones).
inline cxxopts::ParseResult parse_command_line(cxxopts::Options& options, int argc, char** argv) {
  cxxopts::ParseResult r = options.parse(argc, argv);
  if (r.count("help")) {
    std::printf("%s\n", options.help().c_str());
    std::exit(0);
  }
  if (!r.unmatched().empty()) {
    throw std::invalid_argument("unexpected argument " + r.unmatched()[0]);
  }
  return r;
}

/// {"benchmark", "command", "date", "machine", "versions", "results"}.
inline nlohmann::json report(const std::string& benchmark, int argc, char** argv,
                             nlohmann::json results, nlohmann::json extra_versions = {}) {
  std::string command;
  for (int i = 0; i < argc; ++i) command += (i ? " " : "") + std::string(argv[i]);
  char date[32];
  const std::time_t now = std::time(nullptr);
  std::strftime(date, sizeof date, "%Y-%m-%dT%H:%M:%SZ", std::gmtime(&now));
  nlohmann::json versions = {
      {"dtrain", DTRAIN_VERSION}, {"libtorch", TORCH_VERSION}, {"compiler", __VERSION__}};
  if (extra_versions.is_object()) versions.update(extra_versions);
  return {{"benchmark", benchmark},
          {"command", command},
          {"date", date},
          {"machine",
           {{"cores", std::thread::hardware_concurrency()},
            {"cpu_model", proc_field("/proc/cpuinfo", "model name")},
            {"memory", proc_field("/proc/meminfo", "MemTotal")},
            {"blas", loaded_blas()}}},
          {"versions", versions},
          {"results", std::move(results)}};
}

}  // namespace dtrain::bench
