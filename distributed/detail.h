// Helpers shared by the distribution strategies (internal).
#pragma once

#include <string>

#include <torch/types.h>
#include <nlohmann/json.hpp>

namespace dtrain::distributed::detail {

/// True if no element is NaN or Inf (integer tensors: always). One pass over the bits.
bool all_finite(const torch::Tensor& t);
/// The same over `n` elements of `type` at `data` (in host memory).
bool all_finite(const void* data, int64_t n, torch::ScalarType type);

/// "key: mine vs ref; ..." for every field where two JSON objects differ (nested objects
/// recursively, keys prefixed with `prefix`); empty if equal.
std::string diff_json(const nlohmann::json& mine, const nlohmann::json& ref,
                      const std::string& prefix);

}  // namespace dtrain::distributed::detail
