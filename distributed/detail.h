// Helpers shared by the distribution strategies (internal).
#pragma once

#include <cstdint>
#include <cstring>
#include <string>
#include <type_traits>

#include <torch/types.h>
#include <nlohmann/json.hpp>

namespace dtrain::distributed::detail {

/// True if no element is NaN or Inf (integer tensors: always). One pass over the bits.
bool all_finite(const torch::Tensor& t);
/// The same over `n` elements of `type` at `data` (in host memory).
bool all_finite(const void* data, int64_t n, torch::ScalarType type);

/// 1 when `x` (float or double) is NaN or Inf, else 0, read from its exponent bits as all_finite
/// does: no branch, so a loop that ORs it up as it computes vectorises.
template <typename T>
inline auto nonfinite_bit(T x) {
  static_assert(std::is_floating_point_v<T> && (sizeof(T) == 4 || sizeof(T) == 8));
  using Bits = std::conditional_t<sizeof(T) == 4, uint32_t, uint64_t>;
  constexpr auto kExponent =
      static_cast<Bits>(sizeof(T) == 4 ? 0x7f800000ull : 0x7ff0000000000000ull);
  Bits bits;
  std::memcpy(&bits, &x, sizeof bits);
  return static_cast<Bits>((bits & kExponent) == kExponent);
}

/// fn(divide), where divide(x) is x / n for T: for a floating T and a power-of-two n, x times 1/n,
/// which is exactly the division (a power of two's reciprocal is exact) at a fraction of its cost.
/// Returns what fn returns.
template <typename T, typename Fn>
auto with_division_by(int64_t n, Fn fn) {
  const auto count = static_cast<T>(n);
  if constexpr (std::is_floating_point_v<T>) {
    if (n > 0 && (n & (n - 1)) == 0) {
      const T reciprocal = static_cast<T>(1) / count;
      return fn([reciprocal](T x) { return x * reciprocal; });
    }
  }
  return fn([count](T x) { return static_cast<T>(x / count); });
}

/// IEEE half-precision values (their bits, at any alignment) to float, and floats to halves
/// rounded to the nearest (ties to even; beyond the range to Inf), as c10::Half converts: 8 at a
/// time with the CPU's F16C instructions where it has them (`allow_f16c`), else one at a time
/// through c10::Half. The same bits either way, NaN payloads aside. LibTorch's own conversion
/// (Tensor::to) takes 3x as long, and c10::Half one at a time 10x.
void halves_to_floats(const void* in, float* out, int64_t n, bool allow_f16c = true);
void floats_to_halves(const float* in, void* out, int64_t n, bool allow_f16c = true);
/// dst[i] = dst[i] + src[i] for halves (bits, any alignment), summed in float and rounded once,
/// as c10::Half adds.
void add_halves(void* dst, const void* src, int64_t n, bool allow_f16c = true);

/// dst = src, 1-D tensors of as many elements, converted to dst's type and device: float <-> half
/// on the CPU through the conversions above, anything else by Tensor::copy_.
void copy_converting(const torch::Tensor& dst, const torch::Tensor& src);

/// "key: mine vs ref; ..." for every field where two JSON objects differ (nested objects
/// recursively, keys prefixed with `prefix`); empty if equal.
std::string diff_json(const nlohmann::json& mine, const nlohmann::json& ref,
                      const std::string& prefix);

}  // namespace dtrain::distributed::detail
