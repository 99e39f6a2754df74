// Helpers shared by the test suites: temporary folders, running the dtrain binary, MNIST path.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>

namespace dtrain::testing {

/// A fresh folder under the system temp dir, removed at destruction.
class TempDir {
 public:
  TempDir() {
    std::random_device rd;
    path_ = std::filesystem::temp_directory_path() /
            ("dtrain-test-" + std::to_string(rd()) + std::to_string(rd()));
    std::filesystem::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    std::filesystem::remove_all(path_, ec);
  }
  const std::filesystem::path& path() const { return path_; }
  operator const std::filesystem::path&() const { return path_; }
  std::filesystem::path operator/(const std::string& name) const { return path_ / name; }

 private:
  std::filesystem::path path_;
};

inline void write_bytes(const std::filesystem::path& path, const std::string& bytes) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream out(path, std::ios::binary);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

inline std::string read_text(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

struct CommandResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

/// Runs a shell command with a hard time limit (coreutils `timeout`), capturing its output.
inline CommandResult run_command(const std::string& command, int timeout_seconds = 600) {
  TempDir tmp;
  const auto log = tmp / "output.log";
  const std::string full = "timeout -k 10 " + std::to_string(timeout_seconds) + " " + command +
                           " > '" + log.string() + "' 2>&1";
  const int status = std::system(full.c_str());
  CommandResult r;
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  r.output = read_text(log);
  return r;
}

/// Path of the dtrain binary under test (set by CMake).
inline std::string dtrain_binary() { return DTRAIN_BINARY; }

/// The real MNIST folder from DTRAIN_MNIST_DIR, or empty. Under CI=true a missing folder fails
/// the calling test instead of skipping it.
inline std::string mnist_dir() {
  const char* dir = std::getenv("DTRAIN_MNIST_DIR");
  if (dir != nullptr && std::filesystem::is_directory(dir)) return dir;
  return "";
}

#define DTRAIN_REQUIRE_MNIST(var)                                                        \
  const std::string var = ::dtrain::testing::mnist_dir();                                \
  if (var.empty()) {                                                                     \
    if (std::getenv("CI") != nullptr) FAIL() << "CI=true but DTRAIN_MNIST_DIR is unset"; \
    GTEST_SKIP() << "set DTRAIN_MNIST_DIR to a folder with MNIST to run this test";      \
  }

}  // namespace dtrain::testing
