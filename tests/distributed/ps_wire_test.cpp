// The ps's step messages on byte buffers (ps_wire.h): the same bytes as the generated code's,
// read in place whatever the receive buffers' boundaries, and malformed ones refused.
#include "distributed/ps/ps_wire.h"

#include <gtest/gtest.h>

#include <c10/util/Half.h>

#include <cmath>
#include <cstring>
#include <limits>

namespace dtrain::distributed::ps {
namespace {

std::string bytes_of(const grpc::ByteBuffer& buffer) {
  std::vector<grpc::Slice> slices;
  EXPECT_TRUE(buffer.Dump(&slices).ok());
  std::string out;
  for (const auto& s : slices) out.append(reinterpret_cast<const char*>(s.begin()), s.size());
  return out;
}

/// `bytes` as a byte buffer of slices of `piece` bytes (the last shorter): as a message may
/// arrive, cut anywhere, also inside a float.
grpc::ByteBuffer in_pieces(const std::string& bytes, size_t piece) {
  std::vector<grpc::Slice> slices;
  for (size_t at = 0; at < bytes.size(); at += piece) {
    slices.emplace_back(bytes.data() + at, std::min(piece, bytes.size() - at));
  }
  return grpc::ByteBuffer(slices.data(), slices.size());
}

std::vector<float> decoded(const WireSlice& s, size_t n, const std::vector<float>& start = {}) {
  std::vector<float> out = start.empty() ? std::vector<float>(n, -1.f) : start;
  s.decode(out.data(), !start.empty());
  return out;
}

NamedTensors model() {  // 2 + 6 + 3 values: the flat vector 0, 1, ..., 10
  return {{"a", torch::arange(0, 2, torch::kFloat)},
          {"b", torch::arange(2, 8, torch::kFloat).reshape({2, 3})},
          {"c", torch::arange(8, 11, torch::kFloat)}};
}

TEST(PsWire, SerializedMessagesAreTheGeneratedCodesBytes) {
  PushRequest head;
  head.set_task("worker:1");
  head.set_step(42);
  head.set_pulled_version(7);
  head.set_stop_signal(15);
  head.set_checkpoint(true);
  for (const bool half : {false, true}) {
    // Elements [1, 10): across all three tensors, each sent from its own memory (or converted).
    const grpc::ByteBuffer wire = serialize_with_slice(head, PushRequest::kGradientFieldNumber,
                                                       outgoing_range(model(), 1, 10, half));
    PushRequest parsed;
    ASSERT_TRUE(parsed.ParseFromString(bytes_of(wire)));
    EXPECT_EQ(parsed.task(), "worker:1");
    EXPECT_EQ(parsed.step(), 42);
    EXPECT_EQ(parsed.pulled_version(), 7);
    EXPECT_EQ(parsed.stop_signal(), 15);
    EXPECT_TRUE(parsed.checkpoint());
    EXPECT_EQ(parsed.gradient().begin(), 1);
    EXPECT_EQ(parsed.gradient().float16(), half);
    const torch::Tensor expected = torch::arange(1, 10, torch::kFloat);
    const torch::Tensor values =
        half ? torch::from_blob(parsed.mutable_gradient()->mutable_values()->data(), {9},
                                torch::kHalf)
                   .to(torch::kFloat)
             : torch::from_blob(parsed.mutable_gradient()->mutable_values()->data(), {9});
    EXPECT_TRUE(values.equal(expected)) << values;
  }
}

TEST(PsWire, ReadsValuesInPlaceWhereverTheBuffersAreCut) {
  PushReply reply;
  reply.set_version(3);
  reply.set_stop_signal(2);
  reply.mutable_slice()->set_begin(5);
  std::vector<float> values(37);
  for (size_t i = 0; i < values.size(); ++i) values[i] = 0.5f * static_cast<float>(i) - 3.f;
  reply.mutable_slice()->set_values(
      std::string(reinterpret_cast<const char*>(values.data()), values.size() * 4));
  const std::string bytes = reply.SerializeAsString();
  for (const size_t piece : {size_t{1}, size_t{3}, size_t{7}, size_t{64}, bytes.size()}) {
    const grpc::ByteBuffer wire = in_pieces(bytes, piece);
    PushReply head;
    WireSlice slice;
    ASSERT_EQ(parse_with_slice(wire, PushReply::kSliceFieldNumber, &head, &slice), "") << piece;
    EXPECT_EQ(head.version(), 3);
    EXPECT_EQ(head.stop_signal(), 2);
    EXPECT_FALSE(head.has_slice()) << "the values are read in place, not parsed";
    EXPECT_EQ(slice.begin, 5);
    EXPECT_FALSE(slice.float16);
    EXPECT_NO_THROW(slice.check(5, 37, false, "reply"));
    EXPECT_EQ(decoded(slice, 37), values) << piece;
    std::vector<float> twice = values;
    for (auto& v : twice) v *= 2;
    EXPECT_EQ(decoded(slice, 37, values), twice) << "accumulated, pieces of " << piece;
    // Into tensors of the model: elements [5, 11) of the values go to b's last 3 and c.
    std::vector<float> six(values.begin(), values.begin() + 6);
    WireSlice first_six = slice;
    first_six.bytes = 24;
    const NamedTensors m = model();
    write_range(first_six, 5, m);
    EXPECT_TRUE(
        m[1].second.view(-1).narrow(0, 3, 3).equal(torch::tensor({six[0], six[1], six[2]})));
    EXPECT_TRUE(m[2].second.equal(torch::tensor({six[3], six[4], six[5]})));
    EXPECT_TRUE(m[0].second.equal(torch::arange(0, 2, torch::kFloat))) << "left alone";
  }
}

TEST(PsWire, Float16ValuesAreWidened) {
  PushRequest push;
  push.set_task("worker:0");
  const std::vector<float> values = {1.5f, -2.f, 65504.f, 0.f, 1e-3f};
  std::string half;
  for (float v : values) {
    const c10::Half h(v);
    half.append(reinterpret_cast<const char*>(&h.x), 2);
  }
  push.mutable_gradient()->set_values(half);
  push.mutable_gradient()->set_float16(true);
  const std::string bytes = push.SerializeAsString();
  for (const size_t piece : {size_t{1}, size_t{5}, bytes.size()}) {
    PushRequest head;
    WireSlice slice;
    ASSERT_EQ(
        parse_with_slice(in_pieces(bytes, piece), PushRequest::kGradientFieldNumber, &head, &slice),
        "");
    EXPECT_TRUE(slice.float16);
    EXPECT_THROW(slice.check(0, 5, /*allow_half=*/false, "reply"), std::invalid_argument);
    EXPECT_NO_THROW(slice.check(0, 5, /*allow_half=*/true, "push"));
    const std::vector<float> got = decoded(slice, 5);
    for (size_t i = 0; i < values.size(); ++i) {
      EXPECT_EQ(got[i], static_cast<float>(c10::Half(values[i]))) << i << " in pieces of " << piece;
    }
  }
}

// A sync step's last push: summed into what is there and divided by the number of pushes in the
// same pass, exactly as dividing afterwards (a power of two by its reciprocal, which must give
// the same bits), and a NaN or Inf anywhere in the result reported, float32 and float16 alike.
TEST(PsWire, DecodingAveragesAndReportsNonFiniteResults) {
  std::vector<float> values(1001), start(1001);
  for (size_t i = 0; i < values.size(); ++i) {
    values[i] = 0.1f * static_cast<float>(i) - 7.3f;
    start[i] = 1.7f - 0.03f * static_cast<float>(i);
  }
  for (const bool half : {false, true}) {
    std::string bytes;
    std::vector<float> sent = values;  // what the wire holds, as float32
    for (float& v : sent) {
      if (half) {
        const c10::Half h(v);
        bytes.append(reinterpret_cast<const char*>(&h.x), 2);
        v = static_cast<float>(h);
      } else {
        bytes.append(reinterpret_cast<const char*>(&v), 4);
      }
    }
    PushRequest push;
    push.mutable_gradient()->set_values(bytes);
    push.mutable_gradient()->set_float16(half);
    const std::string message = push.SerializeAsString();
    for (const size_t piece : {size_t{3}, message.size()}) {
      const grpc::ByteBuffer wire = in_pieces(message, piece);  // the slice's spans are in it
      PushRequest head;
      WireSlice slice;
      ASSERT_EQ(parse_with_slice(wire, PushRequest::kGradientFieldNumber, &head, &slice), "");
      for (const int n : {1, 2, 3, 4, 7}) {
        SCOPED_TRACE("half " + std::to_string(half) + ", pieces of " + std::to_string(piece) +
                     ", divided by " + std::to_string(n));
        std::vector<float> out = start;
        EXPECT_TRUE(slice.decode(out.data(), /*accumulate=*/true, n));
        std::vector<float> alone(values.size(), -1.f);
        EXPECT_TRUE(slice.decode(alone.data(), /*accumulate=*/false, n));
        for (size_t i = 0; i < values.size(); ++i) {
          ASSERT_EQ(out[i], (start[i] + sent[i]) / static_cast<float>(n)) << i;
          ASSERT_EQ(alone[i], sent[i] / static_cast<float>(n)) << i;
        }
      }
      for (const size_t at : {size_t{0}, size_t{500}, values.size() - 1}) {
        for (const float bad : {std::numeric_limits<float>::infinity(), std::nanf("")}) {
          std::vector<float> out = start;
          out[at] = bad;
          EXPECT_FALSE(slice.decode(out.data(), /*accumulate=*/true, 2)) << at;
        }
      }
    }
  }
}

TEST(PsWire, MalformedMessagesAreRefusedWithTheReason) {
  PushRequest push;
  push.set_task("worker:0");
  push.mutable_gradient()->set_values(std::string(16, '\1'));
  const std::string good = push.SerializeAsString();
  const auto error = [](const std::string& bytes) {
    PushRequest head;
    WireSlice slice;
    return parse_with_slice(in_pieces(bytes, 5), PushRequest::kGradientFieldNumber, &head, &slice);
  };
  EXPECT_EQ(error(good), "");
  // Cut anywhere: refused by the parser, or (cut between fields) by the handler's check.
  for (size_t cut = 0; cut < good.size(); ++cut) {
    PushRequest head;
    WireSlice slice;
    const std::string e = parse_with_slice(in_pieces(good.substr(0, cut), 5),
                                           PushRequest::kGradientFieldNumber, &head, &slice);
    if (e.empty()) {
      EXPECT_THROW(slice.check(0, 4, true, "push"), std::invalid_argument) << cut;
    }
    if (cut > good.find('\x22')) {
      EXPECT_NE(e, "") << "the gradient cut after " << cut << " bytes";
    }
  }
  EXPECT_NE(error(good + good.substr(good.find('\x22'))), "")  // the gradient field again
      << "a second gradient";
  EXPECT_NE(error("\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff"), "");
  // A values length beyond its Slice message.
  std::string long_values = "\x22\x03\x12\x7f\x01";
  EXPECT_NE(error(long_values), "");
  // A wrong size or range is the handler's to refuse, with what was expected.
  WireSlice slice;
  PushRequest head;
  ASSERT_EQ(parse_with_slice(in_pieces(good, 3), PushRequest::kGradientFieldNumber, &head, &slice),
            "");
  try {
    slice.check(0, 5, true, "worker:0's gradient to ps:0");
    FAIL() << "5 values expected, 4 sent";
  } catch (const std::invalid_argument& e) {
    EXPECT_NE(std::string(e.what()).find("(20 bytes), got begin 0 and 16 bytes"), std::string::npos)
        << e.what();
  }
}

}  // namespace
}  // namespace dtrain::distributed::ps
