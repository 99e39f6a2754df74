#include "data/idx.h"

#include <fcntl.h>
#include <sys/mman.h>
#include <unistd.h>
#include <zlib.h>

#include <algorithm>
#include <cstring>
#include <fstream>
#include <functional>
#include <limits>
#include <vector>

#include "core/errors.h"
#include "core/file_util.h"

namespace dtrain::data {
namespace fs = std::filesystem;

namespace {

constexpr int kMaxDims = 16;
// No single IDX dimension or payload may exceed this; MNIST's largest file is 47 MB.
constexpr uint64_t kMaxPayloadBytes = uint64_t{1} << 36;
constexpr uint64_t kMaxFileBytes = uint64_t{1} << 36;

uint32_t read_be32(const unsigned char* p) {
  return (uint32_t{p[0]} << 24) | (uint32_t{p[1]} << 16) | (uint32_t{p[2]} << 8) | uint32_t{p[3]};
}

torch::Dtype dtype_of(IdxType t) {
  switch (t) {
    case IdxType::kUInt8:
      return torch::kUInt8;
    case IdxType::kInt8:
      return torch::kInt8;
    case IdxType::kInt16:
      return torch::kInt16;
    case IdxType::kInt32:
      return torch::kInt32;
    case IdxType::kFloat32:
      return torch::kFloat32;
    case IdxType::kFloat64:
      return torch::kFloat64;
  }
  throw DataError("unknown IDX type");
}

IdxType idx_type_of(torch::Dtype d) {
  switch (d) {
    case torch::kUInt8:
      return IdxType::kUInt8;
    case torch::kInt8:
      return IdxType::kInt8;
    case torch::kInt16:
      return IdxType::kInt16;
    case torch::kInt32:
      return IdxType::kInt32;
    case torch::kFloat32:
      return IdxType::kFloat32;
    case torch::kFloat64:
      return IdxType::kFloat64;
    default:
      throw DataError(std::string("IDX cannot store dtype ") + c10::toString(d));
  }
}

// Big-endian on disk, host order in memory (x86 and ARM are little-endian).
void swap_to_host(void* data, size_t count, size_t elem) {
  auto* p = static_cast<unsigned char*>(data);
  if (elem == 1) return;
  for (size_t i = 0; i < count; ++i, p += elem) std::reverse(p, p + elem);
}

std::string header_text(const IdxHeader& h) {
  std::string s;
  for (size_t i = 0; i < h.dims.size(); ++i) s += (i ? "x" : "") + std::to_string(h.dims[i]);
  return s;
}

torch::Tensor tensor_from_payload(const IdxHeader& h, const char* payload) {
  auto t = torch::empty(h.dims, torch::TensorOptions().dtype(dtype_of(h.type)));
  std::memcpy(t.data_ptr(), payload, h.payload_bytes());
  swap_to_host(t.data_ptr(), static_cast<size_t>(t.numel()), idx_element_size(h.type));
  return t;
}

void check_size(const IdxHeader& h, uint64_t header_bytes, uint64_t actual_total,
                const std::string& name) {
  const uint64_t expected = header_bytes + h.payload_bytes();
  if (actual_total != expected) {
    throw DataError(name + ": header says " + header_text(h) + " elements of " +
                    std::to_string(idx_element_size(h.type)) + " byte(s) (" +
                    std::to_string(expected) + " bytes with the header) but the file has " +
                    std::to_string(actual_total) +
                    (actual_total < expected ? " (truncated)" : " (trailing bytes)"));
  }
}

bool is_gzip(const fs::path& path) {
  std::ifstream in(path, std::ios::binary);
  unsigned char magic[2] = {0, 0};
  in.read(reinterpret_cast<char*>(magic), 2);
  return in.gcount() == 2 && magic[0] == 0x1f && magic[1] == 0x8b;
}

}  // namespace

size_t idx_element_size(IdxType type) {
  switch (type) {
    case IdxType::kUInt8:
    case IdxType::kInt8:
      return 1;
    case IdxType::kInt16:
      return 2;
    case IdxType::kInt32:
    case IdxType::kFloat32:
      return 4;
    case IdxType::kFloat64:
      return 8;
  }
  throw DataError("unknown IDX type code " + std::to_string(static_cast<int>(type)));
}

uint64_t IdxHeader::payload_bytes() const {
  uint64_t n = idx_element_size(type);
  for (int64_t d : dims) n *= static_cast<uint64_t>(d);  // bounded by parse_idx_header
  return n;
}

IdxHeader parse_idx_header(std::string_view bytes, const std::string& name) {
  if (bytes.size() < 4) {
    throw DataError(name + ": file is " + std::to_string(bytes.size()) +
                    " bytes, too short for an IDX header (at least 4)");
  }
  const auto* p = reinterpret_cast<const unsigned char*>(bytes.data());
  if (p[0] != 0 || p[1] != 0) {
    char found[16];
    std::snprintf(found, sizeof(found), "%02x %02x %02x %02x", p[0], p[1], p[2], p[3]);
    throw DataError(name + ": bad IDX magic " + found +
                    " (expected 00 00 <type> <dims>; is the file gzip-compressed or not IDX?)");
  }
  IdxHeader h;
  switch (p[2]) {
    case 0x08:
    case 0x09:
    case 0x0B:
    case 0x0C:
    case 0x0D:
    case 0x0E:
      h.type = static_cast<IdxType>(p[2]);
      break;
    default: {
      char found[8];
      std::snprintf(found, sizeof(found), "0x%02x", p[2]);
      throw DataError(name + ": unknown IDX type code " + found +
                      " (expected 0x08, 0x09, 0x0B, 0x0C, 0x0D or 0x0E)");
    }
  }
  const int ndims = p[3];
  if (ndims < 1 || ndims > kMaxDims) {
    throw DataError(name + ": IDX header has " + std::to_string(ndims) +
                    " dimensions (expected 1 to " + std::to_string(kMaxDims) + ")");
  }
  const size_t header_bytes = 4 + 4 * static_cast<size_t>(ndims);
  if (bytes.size() < header_bytes) {
    throw DataError(name + ": truncated IDX header: " + std::to_string(ndims) +
                    " dimensions need " + std::to_string(header_bytes) + " bytes, the file has " +
                    std::to_string(bytes.size()));
  }
  uint64_t total = idx_element_size(h.type);
  for (int i = 0; i < ndims; ++i) {
    const uint32_t d = read_be32(p + 4 + 4 * i);
    if (d == 0) {
      throw DataError(name + ": IDX dimension " + std::to_string(i) + " is 0 (expected >= 1)");
    }
    if (d > kMaxPayloadBytes / total) {  // total * d, overflow-free: total >= 1
      throw DataError(name + ": IDX dimensions are absurd: dimension " + std::to_string(i) +
                      " is " + std::to_string(d) + ", making more than " +
                      std::to_string(kMaxPayloadBytes) + " bytes");
    }
    total *= d;
    h.dims.push_back(d);
  }
  return h;
}

torch::Tensor parse_idx(std::string_view bytes, const std::string& name) {
  IdxHeader h = parse_idx_header(bytes, name);
  const uint64_t header_bytes = 4 + 4 * h.dims.size();
  check_size(h, header_bytes, bytes.size(), name);
  return tensor_from_payload(h, bytes.data() + header_bytes);
}

IdxHeader read_idx_header(const fs::path& path) {
  std::error_code ec;
  if (!fs::is_regular_file(path, ec)) throw DataError(path.string() + ": no such file");
  const auto prefix = [&](size_t bytes) {
    std::ifstream in(path, std::ios::binary);
    std::string head(bytes, '\0');
    in.read(head.data(), static_cast<std::streamsize>(head.size()));
    head.resize(static_cast<size_t>(in.gcount()));
    return head;
  };
  if (!is_gzip(path)) {
    // Checked against the file size, so a header is only returned for a file of the right size.
    IdxHeader h = parse_idx_header(prefix(4 + 4 * kMaxDims), path.string());
    check_size(h, 4 + 4 * h.dims.size(), fs::file_size(path), path.string());
    return h;
  }
  // Only the first inflated chunk (at most 1 MiB) is produced to read the header, from the first
  // 64 KiB of the file; the whole file only when its gzip header is longer than that.
  const std::string name = path.string() + " (gzip)";
  constexpr size_t kPrefix = size_t{64} << 10;
  try {
    return parse_idx_header(gunzip(prefix(kPrefix), name, 4 + 4 * kMaxDims, false), name);
  } catch (const DataError&) {
    if (fs::file_size(path) <= kPrefix) throw;
  }
  return parse_idx_header(gunzip(read_file(path, kMaxFileBytes), name, 4 + 4 * kMaxDims, false),
                          name);
}

torch::Tensor read_idx(const fs::path& path) {
  if (!is_gzip(path)) {
    // The header against the file size first; then the payload straight into the tensor, with no
    // intermediate buffer (page faults are dear in a VM, and an MNIST split is 47 MB).
    const IdxHeader h = read_idx_header(path);
    const uint64_t header_bytes = 4 + 4 * h.dims.size();
    if (header_bytes + h.payload_bytes() > kMaxFileBytes) {
      throw DataError(path.string() + ": " + std::to_string(header_bytes + h.payload_bytes()) +
                      " bytes, more than the limit of " + std::to_string(kMaxFileBytes));
    }
    const auto options = torch::TensorOptions().dtype(dtype_of(h.type));
    if (header_bytes % idx_element_size(h.type) == 0 && h.payload_bytes() > 0) {
      // Mapped privately from the page cache, populated in one call: no copy, and the element
      // swap below (multi-byte types) writes to private pages, never to the file.
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) throw IoError(path.string() + ": cannot open for reading");
      const size_t length = static_cast<size_t>(header_bytes + h.payload_bytes());
      void* base =
          ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_POPULATE, fd, 0);
      ::close(fd);
      if (base != MAP_FAILED) {
        auto t = torch::from_blob(
            static_cast<char*>(base) + header_bytes, h.dims,
            [base, length](void*) { ::munmap(base, length); }, options);
        swap_to_host(t.data_ptr(), static_cast<size_t>(t.numel()), idx_element_size(h.type));
        return t;
      }
    }
    auto t = torch::empty(h.dims, options);
    std::ifstream in(path, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(header_bytes));
    in.read(static_cast<char*>(t.data_ptr()), static_cast<std::streamsize>(h.payload_bytes()));
    if (static_cast<uint64_t>(in.gcount()) != h.payload_bytes()) {
      throw IoError(path.string() + ": short read (" + std::to_string(in.gcount()) + " of " +
                    std::to_string(h.payload_bytes()) + " payload bytes)");
    }
    swap_to_host(t.data_ptr(), static_cast<size_t>(t.numel()), idx_element_size(h.type));
    return t;
  }
  // gzip: read the header first, then inflate no more than it promises (plus the chunk that
  // shows trailing data), never an unbounded stream.
  const std::string name = path.string() + " (gzip)";
  const std::string compressed = read_file(path, kMaxFileBytes);
  IdxHeader h = parse_idx_header(gunzip(compressed, name, 4 + 4 * kMaxDims, false), name);
  const uint64_t header_bytes = 4 + 4 * h.dims.size();
  const uint64_t expected = header_bytes + h.payload_bytes();
  // First pass: count what the stream holds, keeping nothing, so that a stream shorter or longer
  // than its header promises is refused before anything of that size is allocated.
  const uint64_t actual =
      inflate_stream(compressed, name, expected, true, [](const char*, size_t) {});
  check_size(h, header_bytes, actual, name);
  // Second pass: straight into the tensor.
  auto t = torch::empty(h.dims, torch::TensorOptions().dtype(dtype_of(h.type)));
  char* dst = static_cast<char*>(t.data_ptr());
  uint64_t pos = 0;
  inflate_stream(compressed, name, expected, true, [&](const char* p, size_t n) {
    const uint64_t end = pos + n;
    if (end > header_bytes) {
      const uint64_t from = std::max(pos, header_bytes);
      std::memcpy(dst + (from - header_bytes), p + (from - pos), end - from);
    }
    pos = end;
  });
  swap_to_host(t.data_ptr(), static_cast<size_t>(t.numel()), idx_element_size(h.type));
  return t;
}

std::string encode_idx(const torch::Tensor& tensor) {
  auto t = tensor.contiguous().cpu();
  const IdxType type = idx_type_of(t.scalar_type());
  if (t.dim() < 1 || t.dim() > kMaxDims) throw DataError("IDX needs 1 to 16 dimensions");
  std::string out;
  out.push_back(0);
  out.push_back(0);
  out.push_back(static_cast<char>(type));
  out.push_back(static_cast<char>(t.dim()));
  for (int64_t i = 0; i < t.dim(); ++i) {
    const auto d = static_cast<uint32_t>(t.size(i));
    for (int s = 24; s >= 0; s -= 8) out.push_back(static_cast<char>((d >> s) & 0xff));
  }
  const size_t elem = idx_element_size(type);
  const size_t start = out.size();
  out.append(static_cast<const char*>(t.data_ptr()), static_cast<size_t>(t.numel()) * elem);
  swap_to_host(out.data() + start, static_cast<size_t>(t.numel()), elem);
  return out;
}

uint64_t inflate_stream(std::string_view gz, const std::string& name, uint64_t limit,
                        bool whole_stream, const std::function<void(const char*, size_t)>& sink) {
  if (gz.size() > std::numeric_limits<uInt>::max()) {
    throw DataError(name + ": compressed file of " + std::to_string(gz.size()) +
                    " bytes is larger than dtrain reads (4 GiB)");
  }
  z_stream zs{};
  if (inflateInit2(&zs, 15 + 32) != Z_OK) throw IoError("inflateInit2 failed");
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(gz.data()));
  zs.avail_in = static_cast<uInt>(gz.size());
  constexpr size_t kChunk = size_t{1} << 20;
  std::vector<char> chunk(kChunk);
  uint64_t total = 0;
  int rc = Z_OK;
  while (rc != Z_STREAM_END && total <= limit) {
    zs.next_out = reinterpret_cast<Bytef*>(chunk.data());
    zs.avail_out = static_cast<uInt>(kChunk);
    rc = inflate(&zs, Z_NO_FLUSH);
    if (rc != Z_OK && rc != Z_STREAM_END) {
      inflateEnd(&zs);
      throw DataError(name + (rc == Z_BUF_ERROR
                                  ? ": gzip stream is truncated"
                                  : ": corrupt gzip data (zlib error " + std::to_string(rc) + ")"));
    }
    const size_t produced = kChunk - zs.avail_out;
    sink(chunk.data(), produced);
    total += produced;
  }
  const uInt trailing = zs.avail_in;
  inflateEnd(&zs);
  if (whole_stream && rc == Z_STREAM_END && trailing > 0) {
    throw DataError(name + ": " + std::to_string(trailing) +
                    " bytes of trailing data after the end of the gzip stream (the raw reader "
                    "refuses trailing bytes too)");
  }
  return total;
}

std::string gunzip(std::string_view gz, const std::string& name, uint64_t limit,
                   bool whole_stream) {
  std::string out;
  inflate_stream(gz, name, limit, whole_stream, [&](const char* p, size_t n) { out.append(p, n); });
  return out;
}

std::string gzip_compress(std::string_view bytes) {
  z_stream zs{};
  if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, 15 + 16, 8, Z_DEFAULT_STRATEGY) != Z_OK)
    throw IoError("deflateInit2 failed");
  std::string out(deflateBound(&zs, bytes.size()) + 32, '\0');
  zs.next_in = reinterpret_cast<Bytef*>(const_cast<char*>(bytes.data()));
  zs.avail_in = static_cast<uInt>(bytes.size());
  zs.next_out = reinterpret_cast<Bytef*>(out.data());
  zs.avail_out = static_cast<uInt>(out.size());
  int rc = deflate(&zs, Z_FINISH);
  deflateEnd(&zs);
  if (rc != Z_STREAM_END) throw IoError("gzip compression failed");
  out.resize(zs.total_out);
  return out;
}

}  // namespace dtrain::data
