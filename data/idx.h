// IDX files (the MNIST format): big-endian header, any element type, any number of dimensions.
#pragma once

#include <cstdint>
#include <filesystem>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <torch/types.h>

namespace dtrain::data {

/// The element type codes of the IDX format.
enum class IdxType : uint8_t {
  kUInt8 = 0x08,
  kInt8 = 0x09,
  kInt16 = 0x0B,
  kInt32 = 0x0C,
  kFloat32 = 0x0D,
  kFloat64 = 0x0E,
};

/// Element size in bytes; throws DataError for an unknown code.
size_t idx_element_size(IdxType type);

struct IdxHeader {
  IdxType type = IdxType::kUInt8;
  std::vector<int64_t> dims;
  /// Product of dims times element size: the payload bytes the header promises.
  uint64_t payload_bytes() const;
};

/// Parses and validates the header at the start of `bytes` (which may be only a prefix of the
/// file). `name` is used in error messages. Throws DataError.
IdxHeader parse_idx_header(std::string_view bytes, const std::string& name);

/// Reads only the header of an IDX file, raw or gzip-compressed (inflating at most 1 MiB);
/// a raw file's size is checked against it. Throws DataError naming the file.
IdxHeader read_idx_header(const std::filesystem::path& path);

/// Reads a whole IDX file, raw or gzip-compressed (detected by its magic bytes, not its name),
/// into a CPU tensor of the matching dtype (uint8, int8, int16, int32, float32, float64) and
/// shape. Rejects truncated files and trailing bytes. Allocation never exceeds what the file
/// actually holds.
torch::Tensor read_idx(const std::filesystem::path& path);

/// Parses an in-memory IDX image (uncompressed).
torch::Tensor parse_idx(std::string_view bytes, const std::string& name);

/// Encodes a CPU tensor of a supported dtype as an IDX image (uncompressed).
std::string encode_idx(const torch::Tensor& tensor);

/// Inflates a gzip (or zlib) stream 1 MiB at a time, handing each piece to `sink`; stops once
/// more than `limit` bytes came out and returns how many did. Memory stays at one piece. Throws
/// DataError naming `name` for corrupt or truncated data and, with `whole_stream`, for bytes
/// after the end of the stream.
uint64_t inflate_stream(std::string_view gz, const std::string& name, uint64_t limit,
                        bool whole_stream, const std::function<void(const char*, size_t)>& sink);

/// Inflates a gzip (or zlib) stream in memory. Output grows with the data actually inflated and
/// stops once it passes `limit` bytes (the caller reports the excess), so a hostile stream cannot
/// make it allocate more than limit + 1 MiB. Throws DataError naming `name` for corrupt or
/// truncated data. With `whole_stream`, bytes after the end of the gzip stream are refused.
std::string gunzip(std::string_view gz, const std::string& name, uint64_t limit,
                   bool whole_stream = true);

/// gzip-compresses bytes (used to write .gz test files).
std::string gzip_compress(std::string_view bytes);

}  // namespace dtrain::data
