#include "distributed/communicator.h"

#include "distributed/detail.h"

namespace dtrain::distributed {

bool Communicator::allreduce_all_finite(torch::Tensor& tensor, ReduceOp op) {
  allreduce(tensor, op);
  return detail::all_finite(tensor);
}

torch::Tensor Communicator::reduce_buffer(int64_t numel, torch::ScalarType type) {
  return torch::zeros({numel}, torch::TensorOptions().dtype(type).device(device()));
}

uint64_t fnv1a(const std::string& text) {
  uint64_t h = 1469598103934665603ull;
  for (unsigned char c : text) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

}  // namespace dtrain::distributed
