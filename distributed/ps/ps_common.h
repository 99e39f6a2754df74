// Shared by the parameter server and its clients: the flat-vector partition, slices, auth.
#pragma once

#include <grpcpp/grpcpp.h>

#include <algorithm>
#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/gradient_sync.h"
#include "distributed/ps/ps.grpc.pb.h"

namespace dtrain::distributed::ps {

/// Metadata key that carries DTRAIN_CLUSTER_TOKEN on every RPC.
constexpr const char* kTokenKey = "dtrain-token";

/// The full name of Push, which both ends call on byte buffers (ps_wire.h), not through the
/// generated code.
const char* push_method();

/// TLS for the cluster's gRPC traffic (--tls-cert, --tls-key, --tls-ca): PEM text read at start.
/// A ps serves with cert/key; with a CA it also requires and verifies client certificates
/// (mutual TLS). Workers verify the ps against the CA and present cert/key when given.
struct TlsMaterial {
  std::string cert, key, ca;
  bool enabled() const { return !cert.empty() || !ca.empty(); }
  /// Reads the files (empty paths: not given). Throws ConfigError naming the flag and file when
  /// one is unreadable, not PEM, or given without its partner (cert without key, or a ps
  /// without cert and key).
  static TlsMaterial load(const std::string& cert_file, const std::string& key_file,
                          const std::string& ca_file);
};

std::shared_ptr<grpc::ServerCredentials> server_credentials(const TlsMaterial& tls);
std::shared_ptr<grpc::ChannelCredentials> channel_credentials(const TlsMaterial& tls);

/// Keeps memory glibc's malloc would hand back to the kernel. Every step allocates and frees
/// message buffers the size of the model (gRPC slices, protobuf strings, tensors); above 128 KiB
/// glibc maps and unmaps each one (or trims it off the heap), so every step page-faults its
/// buffers in again: in a VM that was 60 % of a parameter-server step. Called by the ps and its
/// clients at start; the cost is memory kept at its high-water mark.
void retain_freed_memory();

/// Contiguous, size-balanced ranges of a flat vector of `total` floats over `parts` ps tasks.
std::vector<std::pair<int64_t, int64_t>> partition(int64_t total, int parts);

/// Float32 tensor [n] <-> Slice.
void to_slice(const torch::Tensor& values, int64_t begin, Slice* slice);
/// Checks the slice is exactly [begin, begin + count) of float32 (or float16, as it says); throws
/// std::invalid_argument with what differs. The tensor (float or half) is a view of the slice's
/// bytes (no copy): valid while `slice` lives and is not modified.
torch::Tensor view_slice(const Slice& slice, int64_t begin, int64_t count, const std::string& what);

/// Throws std::invalid_argument naming `what` unless a slice (`begin`, `bytes` of float32 or
/// float16 values) holds exactly [expected_begin, expected_begin + count).
void check_slice(const std::string& what, bool float16, int64_t begin, size_t bytes,
                 int64_t expected_begin, int64_t count);

/// Calls fn(tensor, first element in it, elements, offset in [begin, end)) for each part of the
/// flat range [begin, end) of the vector `tensors` make up that lies in one of them.
template <typename Fn>
void for_each_part(const NamedTensors& tensors, int64_t begin, int64_t end, Fn fn) {
  int64_t offset = 0;
  for (const auto& [name, t] : tensors) {
    const int64_t lo = std::max(begin, offset), hi = std::min(end, offset + t.numel());
    if (lo < hi) fn(t, lo - offset, hi - lo, lo - begin);
    offset += t.numel();
    if (offset >= end) break;
  }
}

/// The model as the protocol's flat vector without building it: `tensors` concatenated,
/// flattened, in order. copy_range writes elements [begin, end) into `slice` as float32 (one
/// copy per tensor, none of the whole vector; the step's pushes use outgoing_range, ps_wire.h);
/// write_range writes `values` (elements [begin, begin + values.numel())) back into the tensors,
/// whatever their device and type.
void copy_range(const NamedTensors& tensors, int64_t begin, int64_t end, Slice* slice);
void write_range(const torch::Tensor& values, int64_t begin, const NamedTensors& tensors);

/// Raw float32 bytes <-> tensor (optimizer slots). from_bytes checks the element count.
std::string to_bytes(const torch::Tensor& values);
torch::Tensor from_bytes(const std::string& bytes, int64_t count, const std::string& what);

}  // namespace dtrain::distributed::ps
