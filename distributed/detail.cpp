#include "distributed/detail.h"

#include <vector>

namespace dtrain::distributed::detail {

namespace {

// True if every element is finite, in one pass over the bit patterns (an all-ones exponent is
// Inf or NaN). torch::isfinite allocates and makes several passes: 1.6 ms a step for 1 MiB here.
template <typename Bits>
bool all_finite_bits(const void* data, int64_t n, Bits exponent_mask) {
  const auto* p = static_cast<const Bits*>(data);
  Bits bad = 0;
  for (int64_t i = 0; i < n; ++i) bad |= static_cast<Bits>((p[i] & exponent_mask) == exponent_mask);
  return bad == 0;
}

}  // namespace

bool all_finite(const torch::Tensor& t) {
  const torch::Tensor c = t.device().is_cpu() ? t.contiguous() : t.contiguous().cpu();
  return all_finite(c.data_ptr(), c.numel(), c.scalar_type());
}

bool all_finite(const void* data, int64_t n, torch::ScalarType type) {
  switch (type) {
    case torch::kFloat:
      return all_finite_bits<uint32_t>(data, n, 0x7f800000u);
    case torch::kHalf:
      return all_finite_bits<uint16_t>(data, n, 0x7c00u);
    case torch::kDouble:
      return all_finite_bits<uint64_t>(data, n, 0x7ff0000000000000ull);
    default:
      return true;  // integers are always finite
  }
}

std::string diff_json(const nlohmann::json& mine, const nlohmann::json& ref,
                      const std::string& prefix) {
  std::string out;
  auto add = [&](const std::string& key, const nlohmann::json& a, const nlohmann::json& b) {
    if (!out.empty()) out += "; ";
    out += prefix + key + ": " + (a.is_null() ? "missing" : a.dump()) + " vs " +
           (b.is_null() ? "missing" : b.dump());
  };
  if (!mine.is_object() || !ref.is_object()) {
    if (mine != ref) add("value", mine, ref);
    return out;
  }
  std::vector<std::string> keys;
  for (auto it = ref.begin(); it != ref.end(); ++it) keys.push_back(it.key());
  for (auto it = mine.begin(); it != mine.end(); ++it)
    if (!ref.contains(it.key())) keys.push_back(it.key());
  for (const auto& k : keys) {
    const nlohmann::json a = mine.value(k, nlohmann::json()), b = ref.value(k, nlohmann::json());
    if (a == b) continue;
    if (a.is_object() && b.is_object()) {
      const std::string sub = diff_json(a, b, prefix + k + ".");
      if (!sub.empty()) out += (out.empty() ? "" : "; ") + sub;
    } else {
      add(k, a, b);
    }
  }
  return out;
}

}  // namespace dtrain::distributed::detail
