// File helpers: atomic writes and bounded reads.
#pragma once

#include <cstdint>
#include <filesystem>
#include <string>
#include <string_view>

namespace dtrain {

/// Writes `bytes` to `path` atomically: a temporary file in the same folder, fsync, rename,
/// then fsync of the folder. Readers see either the old file or the complete new one.
/// Creates missing parent folders. Throws IoError naming the path on failure. `durable` false
/// leaves out the two fsyncs (for a file that need not survive a crash).
void write_file_atomic(const std::filesystem::path& path, std::string_view bytes,
                       bool durable = true);

/// Fails fast on an output folder that cannot take a run's files: creates `dir`, writes a probe
/// file in it the way outputs are written (temporary file, rename; no fsync) and removes it, and
/// checks that the file system has at least `needed_bytes` free. Throws ConfigError (exit 2) naming
/// `flag`, the folder and the reason.
void check_output_folder(const std::filesystem::path& dir, std::uint64_t needed_bytes,
                         const std::string& flag);

/// True for the name of a temporary file that write_file_atomic (or another temp + rename
/// writer) leaves behind when interrupted: "<name>.tmp.<suffix>".
bool is_temp_file_name(const std::string& file_name);

/// A fresh folder (mkdtemp: unique, unpredictable name) under `parent`, removed with everything
/// in it when this object goes. Throws IoError naming the folder if it cannot be created.
class ScopedTempDir {
 public:
  ScopedTempDir(const std::filesystem::path& parent, const std::string& prefix);
  ~ScopedTempDir();
  ScopedTempDir(const ScopedTempDir&) = delete;
  ScopedTempDir& operator=(const ScopedTempDir&) = delete;
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

/// Reads a whole file. Throws DataError if it is missing or larger than `max_bytes`,
/// IoError if reading fails.
std::string read_file(const std::filesystem::path& path,
                      std::uint64_t max_bytes = std::uint64_t{1} << 32);

/// Lower-case hex SHA-256 of `bytes` (OpenSSL).
std::string sha256_hex(std::string_view bytes);

/// Compares two secrets in time that depends on neither their contents nor where they differ
/// (CRYPTO_memcmp of their SHA-256 digests, so not on their lengths either).
bool secrets_equal(std::string_view a, std::string_view b);

/// `bytes` bytes from OpenSSL's CSPRNG as lower-case hex. Throws IoError if it fails.
std::string random_hex(size_t bytes);

}  // namespace dtrain
