#include "core/tensor_text.h"

#include <fmt/format.h>
#include <fmt/ranges.h>

namespace dtrain {

std::string shape_string(const torch::Tensor& t) {
  return fmt::format("[{}]", fmt::join(t.sizes().vec(), ","));
}

std::string describe_tensor(const torch::Tensor& t) {
  return std::string(c10::toString(t.scalar_type())) + shape_string(t);
}

}  // namespace dtrain
