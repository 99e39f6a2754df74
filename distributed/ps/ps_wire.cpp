#include "distributed/ps/ps_wire.h"

#include <google/protobuf/io/coded_stream.h>
#include <google/protobuf/io/zero_copy_stream.h>
#include <google/protobuf/io/zero_copy_stream_impl_lite.h>
#include <google/protobuf/wire_format_lite.h>

#include <algorithm>
#include <climits>
#include <cstring>
#include <memory>
#include <stdexcept>

#include "distributed/detail.h"
#include "distributed/ps/ps_common.h"

namespace dtrain::distributed::ps {

namespace {

using google::protobuf::io::CodedInputStream;
using google::protobuf::io::CodedOutputStream;
using google::protobuf::io::StringOutputStream;
using WFL = google::protobuf::internal::WireFormatLite;

// Slice's fields (ps.proto).
constexpr int kBeginField = 1, kValuesField = 2, kFloat16Field = 3;

/// Received slices as a protobuf input stream, read where they are: the spans of a WireSlice point
/// into them. (gRPC's ProtoBufferReader reads a copy of each slice, and a small slice keeps its
/// bytes inside the slice object, so spans into the reader's copy would die with the reader.)
class SliceStream final : public google::protobuf::io::ZeroCopyInputStream {
 public:
  explicit SliceStream(const std::vector<grpc::Slice>& slices) : slices_(slices) {}

  bool Next(const void** data, int* size) override {
    for (; index_ < slices_.size(); ++index_, offset_ = 0) {
      const grpc::Slice& s = slices_[index_];
      if (offset_ < s.size()) {
        *data = s.begin() + offset_;
        *size = static_cast<int>(std::min<size_t>(s.size() - offset_, INT_MAX));
        offset_ += static_cast<size_t>(*size);
        count_ += *size;
        return true;
      }
    }
    return false;
  }
  void BackUp(int count) override {  // within what the last Next() gave
    offset_ -= static_cast<size_t>(count);
    count_ -= count;
  }
  bool Skip(int count) override {
    const void* data = nullptr;
    int size = 0;
    while (count > 0) {
      if (!Next(&data, &size)) return false;
      const int taken = std::min(count, size);
      BackUp(size - taken);
      count -= taken;
    }
    return true;
  }
  int64_t ByteCount() const override { return count_; }

 private:
  const std::vector<grpc::Slice>& slices_;
  size_t index_ = 0, offset_ = 0;
  int64_t count_ = 0;
};

/// Reads one Slice message (its length already read and pushed as the limit) into `slice`.
std::string parse_slice(CodedInputStream& in, WireSlice* slice) {
  bool have_values = false;
  while (const uint32_t tag = in.ReadTag()) {
    const int field = WFL::GetTagFieldNumber(tag);
    const auto type = WFL::GetTagWireType(tag);
    if (field == kBeginField && type == WFL::WIRETYPE_VARINT) {
      uint64_t v = 0;
      if (!in.ReadVarint64(&v)) return "a truncated begin";
      slice->begin = static_cast<int64_t>(v);
    } else if (field == kFloat16Field && type == WFL::WIRETYPE_VARINT) {
      uint64_t v = 0;
      if (!in.ReadVarint64(&v)) return "a truncated float16 flag";
      slice->float16 = v != 0;
    } else if (field == kValuesField && type == WFL::WIRETYPE_LENGTH_DELIMITED) {
      if (have_values) return "values given twice";
      have_values = true;
      uint32_t n = 0;
      if (!in.ReadVarint32(&n)) return "a truncated values length";
      if (static_cast<int64_t>(n) > in.BytesUntilLimit() && in.BytesUntilLimit() >= 0) {
        return "values longer than their message";
      }
      slice->bytes = n;
      while (n > 0) {
        const void* data = nullptr;
        int size = 0;
        if (!in.GetDirectBufferPointer(&data, &size) || size <= 0) return "truncated values";
        const size_t take = std::min<size_t>(n, static_cast<size_t>(size));
        slice->spans.emplace_back(static_cast<const uint8_t*>(data), take);
        if (!in.Skip(static_cast<int>(take))) return "truncated values";
        n -= static_cast<uint32_t>(take);
      }
    } else if (!WFL::SkipField(&in, tag)) {
      return "a malformed field " + std::to_string(field);
    }
  }
  return in.ConsumedEntireMessage() ? "" : "a malformed Slice";
}

/// Calls fn(p, n) for the spans of `s` that make up bytes [from, from + len).
template <typename Fn>
void for_each_span(const WireSlice& s, size_t from, size_t len, Fn fn) {
  size_t at = 0;
  for (const auto& [p, n] : s.spans) {
    if (len == 0) break;
    if (at + n > from) {
      const size_t skip = from > at ? from - at : 0;
      const size_t take = std::min(n - skip, len);
      fn(p + skip, take);
      from += take;
      len -= take;
    }
    at += n;
  }
}

/// Feeds the byte stream of the spans to fn(element bytes, index) one element of `width` bytes
/// at a time, in bulk where an element does not straddle two spans.
template <size_t width, typename Bulk, typename One>
void for_each_element(const WireSlice& s, Bulk bulk, One one) {
  uint8_t carry[width];
  size_t have = 0;  // bytes of a straddling element in carry
  size_t index = 0;
  for (auto [p, n] : s.spans) {
    if (have > 0) {
      const size_t take = std::min(width - have, n);
      std::memcpy(carry + have, p, take);
      have += take, p += take, n -= take;
      if (have < width) continue;
      one(carry, index++);
      have = 0;
    }
    const size_t whole = n / width;
    bulk(p, whole, index);
    index += whole;
    p += whole * width, n -= whole * width;
    std::memcpy(carry, p, n);
    have = n;
  }
}

/// out[i] = finish(value(i) [+ out[i] when accumulating]) for i < n, in one pass; returns 1 if a
/// result is NaN or Inf, else 0.
template <typename Finish, typename Value>
uint32_t finish_into(float* __restrict out, size_t n, bool accumulate, Finish finish, Value value) {
  uint32_t nonfinite = 0;
  const auto put = [&](size_t i, float x) {
    nonfinite |= detail::nonfinite_bit(x);
    out[i] = x;
  };
  if (accumulate) {
    for (size_t i = 0; i < n; ++i) put(i, finish(out[i] + value(i)));
  } else {
    for (size_t i = 0; i < n; ++i) put(i, finish(value(i)));
  }
  return nonfinite;
}

/// bulk(element bytes, count, dst + index) for the elements of `s` (of `width` bytes each), which
/// returns 1 if a result is NaN or Inf; returns whether every result is finite.
template <size_t width, typename Bulk>
bool decode_elements(const WireSlice& s, float* dst, Bulk bulk) {
  uint32_t bad = 0;
  for_each_element<width>(
      s, [&](const uint8_t* p, size_t n, size_t at) { bad |= bulk(p, n, dst + at); },
      [&](const uint8_t* p, size_t at) { bad |= bulk(p, 1, dst + at); });
  return bad == 0;
}

/// The bytes `write` writes through a CodedOutputStream.
template <typename Write>
std::string encoded(Write write) {
  std::string bytes;
  {
    StringOutputStream stream(&bytes);
    CodedOutputStream out(&stream);
    write(out);
  }  // (flushed when `out` goes)
  return bytes;
}

template <typename T>
void put_varint_field(CodedOutputStream& out, int field, T value) {
  out.WriteTag(WFL::MakeTag(field, WFL::WIRETYPE_VARINT));
  out.WriteVarint64(static_cast<uint64_t>(value));
}

}  // namespace

void WireSlice::check(int64_t expected_begin, int64_t count, bool allow_half,
                      const std::string& what) const {
  if (float16 && !allow_half) {
    throw std::invalid_argument(what + ": float16 values where float32 values were expected");
  }
  check_slice(what, float16, begin, bytes, expected_begin, count);
}

bool WireSlice::decode(float* dst, bool accumulate, int divide_by) const {
  return detail::with_division_by<float>(divide_by, [&](auto finish) {
    if (float16) {  // converted a block at a time (vectorised), then finished from L1
      return decode_elements<2>(*this, dst, [&](const uint8_t* p, size_t n, float* out) {
        constexpr size_t kBlock = 1024;
        float block[kBlock];
        uint32_t nonfinite = 0;
        for (size_t at = 0; at < n; at += kBlock) {
          const size_t m = std::min(kBlock, n - at);
          detail::halves_to_floats(p + 2 * at, block, static_cast<int64_t>(m));
          nonfinite |=
              finish_into(out + at, m, accumulate, finish, [&](size_t i) { return block[i]; });
        }
        return nonfinite;
      });
    }
    return decode_elements<4>(*this, dst, [&](const uint8_t* p, size_t n, float* out) {
      return finish_into(out, n, accumulate, finish, [p](size_t i) {
        float v;
        std::memcpy(&v, p + 4 * i, 4);
        return v;
      });
    });
  });
}

void WireSlice::copy_bytes(size_t from, size_t len, void* dst) const {
  auto* out = static_cast<uint8_t*>(dst);
  for_each_span(*this, from, len, [&](const uint8_t* p, size_t n) {
    std::memcpy(out, p, n);
    out += n;
  });
}

std::string parse_with_slice(const grpc::ByteBuffer& buffer, int slice_field,
                             google::protobuf::MessageLite* header, WireSlice* slice) {
  *slice = WireSlice();
  auto slices = std::make_shared<std::vector<grpc::Slice>>();
  if (!buffer.Dump(slices.get()).ok()) return "an unreadable message";
  slice->received = slices;  // references to the buffer's slices, which the spans point into
  SliceStream stream(*slices);
  CodedInputStream in(&stream);
  std::string rest;  // every other field, re-encoded for protobuf to parse
  {
    StringOutputStream rest_stream(&rest);
    CodedOutputStream out(&rest_stream);
    bool have_slice = false;
    while (const uint32_t tag = in.ReadTag()) {
      if (WFL::GetTagFieldNumber(tag) == slice_field &&
          WFL::GetTagWireType(tag) == WFL::WIRETYPE_LENGTH_DELIMITED) {
        if (have_slice) return "field " + std::to_string(slice_field) + " given twice";
        have_slice = true;
        uint32_t n = 0;
        if (!in.ReadVarint32(&n)) {
          return "a truncated length of field " + std::to_string(slice_field);
        }
        const auto limit = in.PushLimit(static_cast<int>(std::min<uint32_t>(n, INT32_MAX)));
        if (std::string error = parse_slice(in, slice); !error.empty()) return error;
        if (in.BytesUntilLimit() != 0) return "a truncated field " + std::to_string(slice_field);
        in.PopLimit(limit);
      } else if (!WFL::SkipField(&in, tag, &out)) {
        return "a malformed field " + std::to_string(WFL::GetTagFieldNumber(tag));
      }
    }
    if (!in.ConsumedEntireMessage()) return "a malformed message";
  }
  return header->ParseFromString(rest) ? "" : "a malformed message";
}

OutgoingValues outgoing_range(const NamedTensors& tensors, int64_t begin, int64_t end, bool half) {
  OutgoingValues v;
  v.begin = begin;
  v.float16 = half;
  const auto type = half ? torch::kHalf : torch::kFloat;
  for_each_part(
      tensors, begin, end, [&](const torch::Tensor& t, int64_t first, int64_t n, int64_t) {
        torch::Tensor part = t.detach().reshape(-1).narrow(0, first, n);
        if (part.device() != torch::kCPU || part.scalar_type() != type || !part.is_contiguous()) {
          torch::Tensor staged = torch::empty({n}, type);
          detail::copy_converting(staged, part);
          part = std::move(staged);
        }
        v.add(std::move(part));
      });
  return v;
}

void OutgoingValues::add(torch::Tensor part) {
  auto* owner = new torch::Tensor(std::move(part));
  slices.emplace_back(
      owner->data_ptr(), static_cast<size_t>(owner->nbytes()),
      [](void* t) { delete static_cast<torch::Tensor*>(t); }, owner);
}

grpc::ByteBuffer serialize_with_slice(const google::protobuf::MessageLite& header, int slice_field,
                                      const OutgoingValues& values) {
  size_t bytes = 0;
  for (const auto& s : values.slices) bytes += s.size();
  // The Slice message around its values: begin and the values' tag and length before them,
  // float16 after.
  const std::string before = encoded([&](CodedOutputStream& out) {
    put_varint_field(out, kBeginField, values.begin);
    out.WriteTag(WFL::MakeTag(kValuesField, WFL::WIRETYPE_LENGTH_DELIMITED));
    out.WriteVarint64(bytes);
  });
  const std::string after = encoded([&](CodedOutputStream& out) {
    if (values.float16) put_varint_field(out, kFloat16Field, 1);
  });
  const std::string head =
      header.SerializeAsString() + encoded([&](CodedOutputStream& out) {
        out.WriteTag(WFL::MakeTag(slice_field, WFL::WIRETYPE_LENGTH_DELIMITED));
        out.WriteVarint64(before.size() + bytes + after.size());
      }) +
      before;
  std::vector<grpc::Slice> slices;
  slices.reserve(values.slices.size() + 2);
  slices.emplace_back(head);
  slices.insert(slices.end(), values.slices.begin(), values.slices.end());
  if (!after.empty()) slices.emplace_back(after);
  return grpc::ByteBuffer(slices.data(), slices.size());
}

void write_range(const WireSlice& values, int64_t begin, const NamedTensors& tensors) {
  torch::NoGradGuard no_grad;
  const int64_t end = begin + static_cast<int64_t>(values.bytes / 4);
  for_each_part(tensors, begin, end,
                [&](const torch::Tensor& t, int64_t first, int64_t n, int64_t at) {
                  torch::Tensor part = t.view(-1).narrow(0, first, n);
                  const auto from = static_cast<size_t>(at) * 4, len = static_cast<size_t>(n) * 4;
                  if (part.device() == torch::kCPU && part.scalar_type() == torch::kFloat &&
                      part.is_contiguous()) {
                    values.copy_bytes(from, len, part.data_ptr());
                  } else {
                    torch::Tensor staged = torch::empty({n}, torch::kFloat);
                    values.copy_bytes(from, len, staged.data_ptr());
                    part.copy_(staged);
                  }
                });
}

}  // namespace dtrain::distributed::ps
