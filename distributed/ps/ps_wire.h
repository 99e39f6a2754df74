// The parameter server's step messages (PushRequest, PushReply) without copying their values.
//
// With the generated code the model's values were copied seven times on their way through a push
// and its reply: into the request's bytes field, into gRPC's buffers when serialised, out of them
// into the ps's parsed request, the same three again for the reply, and into the parameters.
// Here the messages travel as gRPC byte buffers: the values field is a list of slices that point
// at the tensors' memory (sent as they are), and a received message's values are read in place
// from the receive buffers; only the copy into the parameters is left (the ps sends its values
// as they are, copying them only to update them while a reply is still being sent). The bytes on
// the wire are the same protobuf encoding, so either side may still be the generated code
// (tests, other clients).
#pragma once

#include <grpcpp/grpcpp.h>

#include <cstdint>
#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/types.h>

#include "core/gradient_sync.h"
#include "distributed/ps/ps.pb.h"

namespace dtrain::distributed::ps {

/// A Slice message read in place: its values are spans of a received byte buffer's slices, which
/// it (and every copy of it) holds.
struct WireSlice {
  int64_t begin = 0;
  bool float16 = false;
  std::vector<std::pair<const uint8_t*, size_t>> spans;
  size_t bytes = 0;                                          // total length of the spans
  std::shared_ptr<const std::vector<grpc::Slice>> received;  // what the spans point into

  /// Throws std::invalid_argument (as view_slice does) unless these are the values of
  /// [begin, begin + count), float32 or, with `allow_half`, float16.
  void check(int64_t begin, int64_t count, bool allow_half, const std::string& what) const;
  /// Writes the values as float32 into dst[0, count) (accumulate: adds them to what is there),
  /// converting float16; with `divide_by` the results are then divided by it (a sum into an
  /// average), in the same pass. Returns whether every result is finite.
  bool decode(float* dst, bool accumulate, int divide_by = 1) const;
  /// Copies `len` bytes from byte `from` of the values to `dst`.
  void copy_bytes(size_t from, size_t len, void* dst) const;
};

/// Parses `buffer` as a message of type Header whose field `slice_field` is a Slice: that field
/// into `slice` (read in place), every other field into `header` (parsed by protobuf). Returns
/// "" or what is wrong with the bytes. A missing slice field leaves `slice` empty.
std::string parse_with_slice(const grpc::ByteBuffer& buffer, int slice_field,
                             google::protobuf::MessageLite* header, WireSlice* slice);

/// The values of a slice field to send: slices of tensors' memory, each holding a reference to
/// its tensor until gRPC is done with it.
struct OutgoingValues {
  int64_t begin = 0;
  bool float16 = false;
  std::vector<grpc::Slice> slices;
  /// Sends `part` (CPU, contiguous) as it is: it must not change until the message is sent.
  void add(torch::Tensor part);
};

/// Elements [begin, end) of the flat vector `tensors` make up (as copy_range): CPU float32
/// contiguous tensors are sent from their own memory (they must not change until the message is
/// sent), others (another device or type, half precision on the wire) converted once.
OutgoingValues outgoing_range(const NamedTensors& tensors, int64_t begin, int64_t end, bool half);

/// `header` serialised, followed by field `slice_field` holding `values`: the protobuf encoding
/// of the whole message, in slices that reference the values' memory.
grpc::ByteBuffer serialize_with_slice(const google::protobuf::MessageLite& header, int slice_field,
                                      const OutgoingValues& values);

/// Writes the values (float32, elements [begin, begin + n)) into the flat vector `tensors`
/// makes up, whatever their device and type.
void write_range(const WireSlice& values, int64_t begin, const NamedTensors& tensors);

}  // namespace dtrain::distributed::ps
