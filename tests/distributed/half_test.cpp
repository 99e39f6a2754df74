// The float <-> half conversions of fp16 compression (distributed/detail.h) must give c10::Half's
// bits, with F16C and without, at any alignment and length.
#include <c10/util/Half.h>
#include <gtest/gtest.h>
#include <torch/types.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <vector>

#include "distributed/detail.h"

namespace dtrain::distributed::detail {
namespace {

float c10_float(uint16_t h) { return static_cast<float>(c10::Half(h, c10::Half::from_bits())); }
uint16_t c10_half(float f) { return c10::Half(f).x; }

bool half_is_nan(uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x03ffu) != 0; }

uint16_t half_at(const std::vector<uint8_t>& bytes, size_t offset, size_t i) {
  uint16_t h;
  std::memcpy(&h, bytes.data() + offset + 2 * i, 2);
  return h;
}

// Halves as bytes starting `offset` bytes into the buffer (1: not even 2-byte aligned).
std::vector<uint8_t> as_bytes(const std::vector<uint16_t>& halves, size_t offset) {
  std::vector<uint8_t> bytes(offset + 2 * halves.size());
  std::memcpy(bytes.data() + offset, halves.data(), 2 * halves.size());
  return bytes;
}

// Every way through: F16C (where the CPU has it) and one at a time; 2-byte aligned and not.
class Half : public ::testing::TestWithParam<std::tuple<bool, size_t>> {};

TEST_P(Half, EveryHalfConvertsToTheFloatC10Gives) {
  const auto [f16c, offset] = GetParam();
  std::vector<uint16_t> all(65536 + 5);  // a tail that is not a multiple of 8
  for (size_t i = 0; i < all.size(); ++i) all[i] = static_cast<uint16_t>(i);
  const std::vector<uint8_t> bytes = as_bytes(all, offset);
  std::vector<float> out(all.size());
  halves_to_floats(bytes.data() + offset, out.data(), static_cast<int64_t>(all.size()), f16c);
  for (size_t i = 0; i < all.size(); ++i) {
    const float want = c10_float(all[i]);
    if (std::isnan(want)) {
      EXPECT_TRUE(std::isnan(out[i])) << "half 0x" << std::hex << all[i];
    } else {
      uint32_t got_bits, want_bits;
      std::memcpy(&got_bits, &out[i], 4);
      std::memcpy(&want_bits, &want, 4);
      ASSERT_EQ(got_bits, want_bits) << "half 0x" << std::hex << all[i];
    }
  }
}

TEST_P(Half, FloatsRoundToTheHalfC10Gives) {
  const auto [f16c, offset] = GetParam();
  std::vector<float> in;
  // Every half's value, the midpoints between neighbours (ties go to even) and just either side
  // of them, subnormals, the edge of the range (65520 rounds to Inf), zeros, Inf and NaN.
  for (uint32_t h = 0; h < 0x7c00u; ++h) {
    for (const uint32_t sign : {0u, 0x8000u}) {
      const float a = c10_float(static_cast<uint16_t>(h | sign));
      const float b = c10_float(static_cast<uint16_t>((h + 1) | sign));
      const float mid = (a + b) / 2;  // exact in float
      in.insert(in.end(), {a, mid, std::nextafter(mid, 0.0f), std::nextafter(mid, 2 * b)});
    }
  }
  const float inf = std::numeric_limits<float>::infinity();
  in.insert(in.end(), {65504.0f, 65519.99f, 65520.0f, 1e10f, -1e10f, 1e-10f, -1e-10f, 1e-45f, 0.0f,
                       -0.0f, inf, -inf, std::numeric_limits<float>::quiet_NaN()});
  std::mt19937 random(7);
  for (int i = 0; i < 1000003; ++i) {  // and random bit patterns
    const uint32_t bits = random();
    float f;
    std::memcpy(&f, &bits, 4);
    in.push_back(f);
  }
  std::vector<uint8_t> bytes(offset + 2 * in.size());
  floats_to_halves(in.data(), bytes.data() + offset, static_cast<int64_t>(in.size()), f16c);
  for (size_t i = 0; i < in.size(); ++i) {
    const uint16_t got = half_at(bytes, offset, i);
    if (std::isnan(in[i])) {
      EXPECT_TRUE(half_is_nan(got)) << in[i];
    } else {
      ASSERT_EQ(got, c10_half(in[i])) << "float " << in[i] << " (element " << i << ")";
    }
  }
}

TEST_P(Half, SumsAreC10HalfSums) {
  const auto [f16c, offset] = GetParam();
  std::mt19937 random(11);
  const size_t n = 200003;
  std::vector<uint16_t> a(n), b(n);
  for (size_t i = 0; i < n; ++i) {
    a[i] = static_cast<uint16_t>(random());  // every kind of half, NaN and Inf included
    b[i] = static_cast<uint16_t>(random());
  }
  std::vector<uint8_t> dst = as_bytes(a, offset), src = as_bytes(b, 1 - offset);
  add_halves(dst.data() + offset, src.data() + 1 - offset, static_cast<int64_t>(n), f16c);
  for (size_t i = 0; i < n; ++i) {
    const c10::Half want =
        c10::Half(a[i], c10::Half::from_bits()) + c10::Half(b[i], c10::Half::from_bits());
    const uint16_t got = half_at(dst, offset, i);
    if (half_is_nan(want.x)) {
      EXPECT_TRUE(half_is_nan(got)) << i;
    } else {
      ASSERT_EQ(got, want.x) << "0x" << std::hex << a[i] << " + 0x" << b[i];
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Ways, Half,
                         ::testing::Combine(::testing::Bool(),
                                            ::testing::Values(size_t{0}, size_t{1})));

TEST(Half, ConversionMatchesLibTorchs) {
  torch::manual_seed(3);
  const torch::Tensor x = torch::randn({100001}) * 1000;
  torch::Tensor h = torch::empty({x.numel()}, torch::kHalf);
  floats_to_halves(x.data_ptr<float>(), h.data_ptr(), x.numel());
  EXPECT_TRUE(torch::equal(h, x.to(torch::kHalf)));
  torch::Tensor back = torch::empty({x.numel()});
  halves_to_floats(h.data_ptr(), back.data_ptr<float>(), h.numel());
  EXPECT_TRUE(torch::equal(back, h.to(torch::kFloat)));
}

}  // namespace
}  // namespace dtrain::distributed::detail
