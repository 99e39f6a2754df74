#include <gtest/gtest.h>
#include <torch/types.h>
#include <torch/utils.h>

#include "core/errors.h"
#include "data/idx.h"
#include "test_util.h"

namespace dtrain::data {
namespace {

using testing::TempDir;
using testing::write_bytes;

std::string header(uint8_t type, std::vector<uint32_t> dims) {
  std::string h = {0, 0, static_cast<char>(type), static_cast<char>(dims.size())};
  for (uint32_t d : dims)
    for (int s = 24; s >= 0; s -= 8) h.push_back(static_cast<char>((d >> s) & 0xff));
  return h;
}

void expect_data_error(const std::filesystem::path& path, const std::string& fragment) {
  try {
    read_idx(path);
    FAIL() << "expected DataError containing '" << fragment << "'";
  } catch (const DataError& e) {
    EXPECT_NE(std::string(e.what()).find(fragment), std::string::npos) << e.what();
    EXPECT_NE(std::string(e.what()).find(path.filename().string()), std::string::npos)
        << "error must name the file: " << e.what();
  }
}

class IdxRoundTrip : public ::testing::TestWithParam<std::tuple<torch::Dtype, bool>> {};

TEST_P(IdxRoundTrip, EveryTypeAndShapeRawAndGzip) {
  const auto [dtype, gz] = GetParam();
  TempDir dir;
  torch::manual_seed(1);
  for (auto shape : std::vector<std::vector<int64_t>>{{7}, {3, 5}, {2, 3, 4}, {2, 1, 3, 2}}) {
    torch::Tensor t = (torch::rand(shape, torch::kDouble) * 200 - 100).to(dtype);
    if (dtype == torch::kUInt8) t = torch::randint(0, 256, shape, torch::kLong).to(dtype);
    std::string bytes = encode_idx(t);
    if (gz) bytes = gzip_compress(bytes);
    const auto path = dir / "x.idx";
    write_bytes(path, bytes);
    torch::Tensor back = read_idx(path);
    EXPECT_EQ(back.scalar_type(), dtype);
    EXPECT_EQ(back.sizes(), t.sizes());
    EXPECT_TRUE(torch::equal(back, t));
  }
}

INSTANTIATE_TEST_SUITE_P(AllTypes, IdxRoundTrip,
                         ::testing::Combine(::testing::Values(torch::kUInt8, torch::kInt8,
                                                              torch::kInt16, torch::kInt32,
                                                              torch::kFloat32, torch::kFloat64),
                                            ::testing::Bool()));

TEST(Idx, BigEndianOnDisk) {
  std::string bytes =
      header(0x0C, {2}) + std::string{0, 0, 1, 2, char(0xff), char(0xff), char(0xff), char(0xfe)};
  torch::Tensor t = parse_idx(bytes, "mem");
  EXPECT_EQ(t[0].item<int32_t>(), 258);
  EXPECT_EQ(t[1].item<int32_t>(), -2);
}

TEST(Idx, WrongMagic) {
  TempDir dir;
  write_bytes(dir / "bad-magic", std::string{1, 2, 8, 1, 0, 0, 0, 1, 5});
  expect_data_error(dir / "bad-magic", "bad IDX magic");
}

TEST(Idx, UnknownTypeCode) {
  TempDir dir;
  write_bytes(dir / "bad-type", header(0x0A, {1}) + "x");
  expect_data_error(dir / "bad-type", "unknown IDX type code 0x0a");
}

TEST(Idx, ZeroDimensions) {
  TempDir dir;
  write_bytes(dir / "zero-ndims", header(0x08, {}));
  expect_data_error(dir / "zero-ndims", "0 dimensions");
  write_bytes(dir / "zero-size", header(0x08, {3, 0}));
  expect_data_error(dir / "zero-size", "dimension 1 is 0");
}

TEST(Idx, AbsurdDimensionsFailBeforeAllocating) {
  TempDir dir;
  // 4 billion x 4 billion x 4 billion doubles: must be refused from the header alone.
  write_bytes(dir / "absurd", header(0x0E, {0xFFFFFFFFu, 0xFFFFFFFFu, 0xFFFFFFFFu}));
  expect_data_error(dir / "absurd", "absurd");
  // Plausible header, tiny file: refused by the size check, also before allocating.
  write_bytes(dir / "big-header", header(0x08, {60000, 28, 28}) + "abc");
  expect_data_error(dir / "big-header", "header says 60000x28x28");
  write_bytes(dir / "big-header.gz", gzip_compress(header(0x08, {60000, 28, 28}) + "abc"));
  expect_data_error(dir / "big-header.gz", "truncated");
}

TEST(Idx, TruncatedAndTrailing) {
  TempDir dir;
  write_bytes(dir / "short-header", std::string{0, 0, 8, 3, 0, 0});
  expect_data_error(dir / "short-header", "truncated IDX header");
  write_bytes(dir / "tiny", std::string{0, 0});
  expect_data_error(dir / "tiny", "too short");
  write_bytes(dir / "truncated", header(0x08, {2, 3}) + "12345");
  expect_data_error(dir / "truncated", "(truncated)");
  write_bytes(dir / "trailing", header(0x08, {2, 3}) + "1234567");
  expect_data_error(dir / "trailing", "(trailing bytes)");
  write_bytes(dir / "trailing.gz", gzip_compress(header(0x0D, {2}) + "12345678" + "9"));
  expect_data_error(dir / "trailing.gz", "(trailing bytes)");
}

TEST(Idx, DimensionsWhoseProductOverflowsAreADataError) {
  // 2^32-1 x 2^32-1 x 16 bytes: each factor fits in 64 bits, the product does not.
  EXPECT_THROW(parse_idx_header(header(0x0E, {0xFFFFFFFFu, 0xFFFFFFFFu, 16}), "x"), DataError);
  EXPECT_THROW(parse_idx_header(header(0x08, {65536, 65536, 65536, 65536}), "x"), DataError);
}

TEST(Idx, GzipWithJunkAfterTheStreamIsRefused) {
  TempDir dir;
  write_bytes(dir / "junk.gz", gzip_compress(header(0x08, {3}) + "abc") + "junk");
  expect_data_error(dir / "junk.gz", "trailing data after the end of the gzip stream");
  write_bytes(dir / "ok.gz", gzip_compress(header(0x08, {3}) + "abc"));
  EXPECT_EQ(read_idx(dir / "ok.gz").numel(), 3);
}

TEST(Idx, CorruptGzip) {
  TempDir dir;
  std::string gz = gzip_compress(header(0x08, {1000}) + std::string(1000, 'a'));
  write_bytes(dir / "cut.gz", gz.substr(0, gz.size() / 2));
  EXPECT_THROW(read_idx(dir / "cut.gz"), DataError);
  std::string flipped = gz;
  flipped[flipped.size() - 6] ^= 0x55;  // CRC trailer
  write_bytes(dir / "crc.gz", flipped);
  EXPECT_THROW(read_idx(dir / "crc.gz"), DataError);
}

TEST(Idx, MissingFile) {
  TempDir dir;
  expect_data_error(dir / "nope", "no such file");
}

}  // namespace
}  // namespace dtrain::data
