#include "core/file_util.h"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <system_error>

#include "core/errors.h"

namespace dtrain {
namespace fs = std::filesystem;

namespace {

std::string errno_text() { return std::strerror(errno); }

void write_all(int fd, std::string_view bytes, const fs::path& path) {
  const char* p = bytes.data();
  size_t left = bytes.size();
  while (left > 0) {
    ssize_t n = ::write(fd, p, left);
    if (n < 0) {
      if (errno == EINTR) continue;
      throw IoError(path.string() + ": write failed: " + errno_text());
    }
    p += n;
    left -= static_cast<size_t>(n);
  }
}

}  // namespace

void check_output_folder(const fs::path& dir, std::uint64_t needed_bytes, const std::string& flag) {
  const std::string where = flag + " " + dir.string();
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir, ec)) {
    throw ConfigError(where + ": cannot create the folder: " +
                      (ec ? ec.message() : "a file of that name is in the way"));
  }
  try {
    // Permissions, space for a small file and the rename that outputs use; no fsync: the probe
    // is removed at once, and waiting for the disk would only slow every start.
    const fs::path probe = dir / ".dtrain-write-check";
    write_file_atomic(probe, "dtrain checks that this folder takes writes\n", /*durable=*/false);
    fs::remove(probe, ec);
  } catch (const IoError& e) {
    throw ConfigError(where + ": not writable: " + e.what());
  }
  struct statvfs st {};
  if (::statvfs(dir.c_str(), &st) == 0) {
    const auto free_bytes = static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
    if (free_bytes < needed_bytes) {
      throw ConfigError(where + ": " + std::to_string(free_bytes / 1024) +
                        " KiB free on its file system, but a checkpoint needs about " +
                        std::to_string(needed_bytes / 1024) + " KiB");
    }
  }
}

ScopedTempDir::ScopedTempDir(const fs::path& parent, const std::string& prefix) {
  std::error_code ec;
  fs::create_directories(parent, ec);
  std::string name = (parent / (prefix + "XXXXXX")).string();
  if (::mkdtemp(name.data()) == nullptr) {
    throw IoError(name + ": cannot create a temporary folder: " + errno_text());
  }
  path_ = name;
}

ScopedTempDir::~ScopedTempDir() {
  std::error_code ec;
  fs::remove_all(path_, ec);
}

void write_file_atomic(const fs::path& path, std::string_view bytes, bool durable) {
  const fs::path dir = path.has_parent_path() ? path.parent_path() : fs::path(".");
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec) throw IoError(dir.string() + ": cannot create folder: " + ec.message());

  // mkstemp: an unpredictable name created with O_EXCL, so a planted file or symlink of the
  // same name is never followed or truncated, and concurrent writers never share a temp file.
  std::string tmp_name = path.string() + ".tmp.XXXXXX";
  int fd = ::mkostemp(tmp_name.data(), O_CLOEXEC);
  const fs::path tmp = tmp_name;
  if (fd < 0) throw IoError(tmp.string() + ": cannot create: " + errno_text());
  ::fchmod(fd, 0644);  // mkstemp creates 0600; outputs are ordinary readable files
  try {
    write_all(fd, bytes, tmp);
    if (durable && ::fsync(fd) != 0)
      throw IoError(tmp.string() + ": fsync failed: " + errno_text());
  } catch (...) {
    ::close(fd);
    ::unlink(tmp.c_str());
    throw;
  }
  if (::close(fd) != 0) {
    ::unlink(tmp.c_str());
    throw IoError(tmp.string() + ": close failed: " + errno_text());
  }
  if (::rename(tmp.c_str(), path.c_str()) != 0) {
    std::string why = errno_text();
    ::unlink(tmp.c_str());
    throw IoError("cannot rename " + tmp.string() + " to " + path.string() + ": " + why);
  }
  if (!durable) return;
  int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd >= 0) {
    ::fsync(dfd);  // best effort: some file systems refuse fsync on folders
    ::close(dfd);
  }
}

std::string read_file(const fs::path& path, std::uint64_t max_bytes) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) {
    throw DataError(path.string() + ": no such file");
  }
  const std::uint64_t size = fs::file_size(path, ec);
  if (ec) throw IoError(path.string() + ": cannot stat: " + ec.message());
  if (size > max_bytes) {
    throw DataError(path.string() + ": file is " + std::to_string(size) +
                    " bytes, more than the limit of " + std::to_string(max_bytes));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) throw IoError(path.string() + ": cannot open for reading");
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (static_cast<std::uint64_t>(in.gcount()) != size) {
    throw IoError(path.string() + ": short read (" + std::to_string(in.gcount()) + " of " +
                  std::to_string(size) + " bytes)");
  }
  return bytes;
}

std::string sha256_hex(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int len = 0;
  if (EVP_Digest(bytes.data(), bytes.size(), digest, &len, EVP_sha256(), nullptr) != 1) {
    throw IoError("SHA-256 computation failed (OpenSSL EVP_Digest)");
  }
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (unsigned i = 0; i < len; ++i) {
    out.push_back(hex[digest[i] >> 4]);
    out.push_back(hex[digest[i] & 15]);
  }
  return out;
}

bool is_temp_file_name(const std::string& file_name) {
  return file_name.find(".tmp.") != std::string::npos;
}

bool secrets_equal(std::string_view a, std::string_view b) {
  unsigned char da[EVP_MAX_MD_SIZE], db[EVP_MAX_MD_SIZE];
  unsigned int la = 0, lb = 0;
  if (EVP_Digest(a.data(), a.size(), da, &la, EVP_sha256(), nullptr) != 1 ||
      EVP_Digest(b.data(), b.size(), db, &lb, EVP_sha256(), nullptr) != 1 || la != lb) {
    return false;
  }
  return CRYPTO_memcmp(da, db, la) == 0;
}

std::string random_hex(size_t bytes) {
  std::string raw(bytes, '\0');
  if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(bytes)) != 1) {
    throw IoError("OpenSSL's random generator failed");
  }
  static const char* const kHex = "0123456789abcdef";
  std::string out;
  for (unsigned char c : raw) {
    out.push_back(kHex[c >> 4]);
    out.push_back(kHex[c & 15]);
  }
  return out;
}

}  // namespace dtrain
