// Tensors as text, for error messages and layout signatures.
#pragma once

#include <string>

#include <torch/types.h>

namespace dtrain {

/// The shape as "[8,16]" ("[]" for a scalar).
std::string shape_string(const torch::Tensor& t);
/// Element type and shape, "Float[8,16]".
std::string describe_tensor(const torch::Tensor& t);

}  // namespace dtrain
