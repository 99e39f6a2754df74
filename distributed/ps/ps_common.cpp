#include "distributed/ps/ps_common.h"

#include <stdexcept>

namespace dtrain::distributed::ps {

std::vector<std::pair<int64_t, int64_t>> partition(int64_t total, int parts) {
  std::vector<std::pair<int64_t, int64_t>> ranges;
  int64_t begin = 0;
  for (int p = 0; p < parts; ++p) {
    const int64_t len = total / parts + (p < total % parts ? 1 : 0);
    ranges.emplace_back(begin, begin + len);
    begin += len;
  }
  return ranges;
}

void to_slice(const torch::Tensor& values, int64_t begin, Slice* slice) {
  slice->set_begin(begin);
  slice->set_values(to_bytes(values));
}

torch::Tensor from_slice(const Slice& slice, int64_t begin, int64_t count,
                         const std::string& what) {
  if (slice.begin() != begin || slice.values().size() != static_cast<size_t>(count) * 4) {
    throw std::invalid_argument(
        what + ": expected float32 values for [" + std::to_string(begin) + ", " +
        std::to_string(begin + count) + ") (" + std::to_string(count * 4) + " bytes), got begin " +
        std::to_string(slice.begin()) + " and " + std::to_string(slice.values().size()) + " bytes");
  }
  return from_bytes(slice.values(), count, what);
}

std::string to_bytes(const torch::Tensor& values) {
  torch::Tensor c = values.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::string(static_cast<const char*>(c.data_ptr()), static_cast<size_t>(c.numel()) * 4);
}

torch::Tensor from_bytes(const std::string& bytes, int64_t count, const std::string& what) {
  if (bytes.size() != static_cast<size_t>(count) * 4) {
    throw std::invalid_argument(what + ": expected " + std::to_string(count) +
                                " float32 values, got " + std::to_string(bytes.size()) + " bytes");
  }
  return torch::from_blob(const_cast<char*>(bytes.data()), {count}, torch::kFloat).clone();
}

}  // namespace dtrain::distributed::ps
