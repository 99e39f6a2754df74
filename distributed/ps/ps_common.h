// Shared by the parameter server and its clients: the flat-vector partition, slices, auth.
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "distributed/ps/ps.grpc.pb.h"

namespace dtrain::distributed::ps {

/// Metadata key that carries DTRAIN_CLUSTER_TOKEN on every RPC.
constexpr const char* kTokenKey = "dtrain-token";

/// Contiguous, size-balanced ranges of a flat vector of `total` floats over `parts` ps tasks.
std::vector<std::pair<int64_t, int64_t>> partition(int64_t total, int parts);

/// Float32 tensor [n] <-> Slice.
void to_slice(const torch::Tensor& values, int64_t begin, Slice* slice);
/// Checks the slice is exactly [begin, begin + count) of float32; throws std::invalid_argument
/// with what differs.
torch::Tensor from_slice(const Slice& slice, int64_t begin, int64_t count, const std::string& what);

/// Raw float32 bytes <-> tensor (optimizer slots). from_bytes checks the element count.
std::string to_bytes(const torch::Tensor& values);
torch::Tensor from_bytes(const std::string& bytes, int64_t count, const std::string& what);

}  // namespace dtrain::distributed::ps
