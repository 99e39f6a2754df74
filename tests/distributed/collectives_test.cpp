// Collectives under a real MPI job: run by ctest as `mpirun -np N collectives_test` for N = 1..4.
// Our ring allreduce must equal MPI_Allreduce bit for bit on integers and within 1e-6 relative on
// floats, for sizes 0, 1, N-1, 1000003 and 16M; broadcast/allgather/barrier and the gradient
// sync's negotiation are checked too.
#include <gtest/gtest.h>
#include <mpi.h>
#include <torch/types.h>
#include <torch/utils.h>

#include <cmath>
#include <limits>

#include "core/errors.h"
#include "distributed/allreduce_sync.h"
#include "distributed/backend/mpi/mpi_communicator.h"

namespace dtrain::distributed {
namespace {

MpiCommunicator& comm() {
  static MpiCommunicator c;
  return c;
}

std::vector<int64_t> sizes() {
  const int n = comm().size();
  // (n + 1 and 33333 are below 512 KiB: with 4 ranks, recursive halving and doubling)
  return {0, 1, std::max(1, n - 1), n + 1, 33333, 1000003, 16 * 1024 * 1024};
}

torch::Tensor random_input(int64_t count, torch::ScalarType type, int seed) {
  torch::manual_seed(1000 + comm().rank() * 17 + seed);
  if (type == torch::kInt || type == torch::kLong) {
    return torch::randint(-1000000, 1000000, {count}, torch::kLong).to(type);
  }
  return (torch::rand({count}, torch::kDouble) + 0.5).to(type);  // well-conditioned sums
}

class RingVsMpi : public ::testing::TestWithParam<torch::ScalarType> {};

// What every rank's reduction must give: rows[0] + rows[1] + ... in order, divided by their
// number when averaging (in T's own arithmetic: integers truncate).
template <typename T>
torch::Tensor reduce_in_rank_order(const torch::Tensor& rows, bool average) {
  const int64_t n = rows.size(0), count = rows.size(1);
  torch::Tensor out = torch::empty({count}, rows.options());
  const T* in = rows.data_ptr<T>();
  T* o = out.data_ptr<T>();
  for (int64_t i = 0; i < count; ++i) {
    T sum = in[i];
    for (int64_t r = 1; r < n; ++r) sum += in[r * count + i];
    o[i] = average ? static_cast<T>(sum / static_cast<T>(n)) : sum;
  }
  return out;
}

torch::Tensor reduce_in_rank_order(const torch::Tensor& rows, bool average) {
  switch (rows.scalar_type()) {
    case torch::kInt:
      return reduce_in_rank_order<int32_t>(rows, average);
    case torch::kLong:
      return reduce_in_rank_order<int64_t>(rows, average);
    case torch::kFloat:
      return reduce_in_rank_order<float>(rows, average);
    default:
      return reduce_in_rank_order<double>(rows, average);
  }
}

TEST_P(RingVsMpi, EqualsMpiAllreduceForEverySize) {
  const auto type = GetParam();
  for (int64_t count : sizes()) {
    SCOPED_TRACE("count " + std::to_string(count));
    torch::Tensor ring = random_input(count, type, static_cast<int>(count % 1000));
    torch::Tensor ref = ring.clone();
    comm().set_algorithm(AllreduceAlgorithm::kRing);
    comm().allreduce(ring);
    comm().set_algorithm(AllreduceAlgorithm::kMpi);
    comm().allreduce(ref);
    comm().set_algorithm(AllreduceAlgorithm::kRing);
    if (type == torch::kInt || type == torch::kLong) {
      EXPECT_TRUE(torch::equal(ring, ref)) << "integers must match bit for bit";
    } else if (count > 0) {
      const double rel =
          ((ring.to(torch::kDouble) - ref.to(torch::kDouble)).abs() / ref.to(torch::kDouble).abs())
              .max()
              .item<double>();
      EXPECT_LE(rel, 1e-6);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Types, RingVsMpi,
                         ::testing::Values(torch::kInt, torch::kLong, torch::kFloat,
                                           torch::kDouble));

TEST(Ring, RankFilledBuffersSumToClosedForm) {
  const int n = comm().size();
  for (int64_t count : {int64_t{0}, int64_t{1}, int64_t{n + 1}, int64_t{12345}}) {
    for (size_t seg : {size_t{4}, size_t{1} << 20}) {  // tiny segments exercise the pipelining
      comm().set_segment_bytes(seg);
      torch::Tensor t = torch::full({count}, comm().rank(), torch::kLong);
      comm().allreduce(t);
      EXPECT_TRUE(torch::equal(t, torch::full({count}, int64_t{n} * (n - 1) / 2, torch::kLong)));
    }
  }
  comm().set_segment_bytes(size_t{1} << 20);
}

// Each chunk's total is summed on one rank and copied to the others, by the ring and by halving
// and doubling alike: every rank ends with the same bits.
TEST(Ring, EveryRankEndsWithTheSameBits) {
  const int n = comm().size();
  for (int64_t count : {int64_t{n + 1}, int64_t{33333}, int64_t{300000}}) {
    for (size_t seg : {size_t{64}, size_t{1} << 20}) {
      SCOPED_TRACE("count " + std::to_string(count) + ", segments of " + std::to_string(seg));
      comm().set_segment_bytes(seg);
      torch::Tensor t = random_input(count, torch::kFloat, static_cast<int>(seg % 97));
      comm().allreduce(t);
      const torch::Tensor every = comm().allgather(t);
      for (int r = 1; r < n; ++r) EXPECT_TRUE(torch::equal(every[r], every[0])) << "rank " << r;
    }
  }
  comm().set_segment_bytes(size_t{1} << 20);
}

TEST(Ring, AverageAndHalfPrecision) {
  const int n = comm().size();
  torch::Tensor f = torch::full({1001}, static_cast<float>(comm().rank()), torch::kFloat);
  comm().allreduce(f, ReduceOp::kAverage);
  EXPECT_TRUE(torch::allclose(f, torch::full({1001}, (n - 1) / 2.0f)));
  torch::Tensor h = torch::full({777}, 0.5, torch::kHalf);
  comm().allreduce(h);
  EXPECT_TRUE(torch::equal(h.to(torch::kFloat), torch::full({777}, 0.5f * n)));
  comm().set_algorithm(AllreduceAlgorithm::kMpi);
  torch::Tensor h2 = torch::full({777}, 0.5, torch::kHalf);
  comm().allreduce(h2);
  comm().set_algorithm(AllreduceAlgorithm::kRing);
  EXPECT_TRUE(torch::equal(h, h2));
}

// Reduce buffers: with every rank on this host (how ctest runs it) they are shared memory and
// reduced in place through it; the results must match MPI_Allreduce and be bitwise equal on every
// rank, for the whole buffer and for parts of it, and leave the rest of the buffer alone.
TEST_P(RingVsMpi, ReduceBuffersMatchMpiAllreduceInPlace) {
  const auto type = GetParam();
  const int n = comm().size();
  for (int64_t count : {int64_t{1}, int64_t{n + 1}, int64_t{4099}, int64_t{1000003}}) {
    SCOPED_TRACE("count " + std::to_string(count));
    torch::Tensor buf = comm().reduce_buffer(count, type);
    ASSERT_TRUE(torch::equal(buf, torch::zeros({count}, type))) << "a reduce buffer starts zeroed";
    EXPECT_EQ(comm().in_shared_memory(buf), n > 1 && comm().local_size() == n);
    const torch::Tensor input = random_input(count, type, 7);
    for (bool part : {false, true}) {
      SCOPED_TRACE(part ? "a part" : "the whole buffer");
      buf.copy_(input);
      // A part: what a fusion bucket is (an offset that is not a multiple of the element count).
      const int64_t lo = part ? count / 3 : 0, hi = part ? count - count / 5 : count;
      torch::Tensor view = buf.narrow(0, lo, hi - lo);
      torch::Tensor ref = input.narrow(0, lo, hi - lo).clone();
      comm().set_algorithm(AllreduceAlgorithm::kMpi);
      comm().allreduce(ref, ReduceOp::kAverage);
      comm().set_algorithm(AllreduceAlgorithm::kRing);
      comm().allreduce(view, ReduceOp::kAverage);
      if (type == torch::kInt || type == torch::kLong) {
        EXPECT_TRUE(torch::equal(view, ref)) << "integers must match bit for bit";
      } else {
        EXPECT_TRUE(torch::allclose(view.to(torch::kDouble), ref.to(torch::kDouble), 1e-6, 0));
      }
      EXPECT_TRUE(torch::equal(buf.narrow(0, 0, lo), input.narrow(0, 0, lo)));
      EXPECT_TRUE(torch::equal(buf.narrow(0, hi, count - hi), input.narrow(0, hi, count - hi)));
      const torch::Tensor all = comm().allgather(view);
      for (int r = 1; r < n; ++r) EXPECT_TRUE(torch::equal(all[r], all[0])) << "rank " << r;
    }
  }
}

// The shared-memory reduction's arithmetic exactly: the sum in rank order, then divided by the
// number of ranks (a power of two multiplies by its reciprocal, which must give the same bits),
// with Inf or NaN anywhere on any rank reported by every rank; sums alone (kSum) as well.
TEST_P(RingVsMpi, ReduceBuffersSumInRankOrderAndFlagNonFinite) {
  const auto type = GetParam();
  const int n = comm().size();
  const int64_t count = 10007;  // several of the reduction's chunks per rank, and a ragged end
  torch::Tensor buf = comm().reduce_buffer(count, type);
  const torch::Tensor input = random_input(count, type, 11);
  const torch::Tensor inputs = comm().allgather(input);
  for (ReduceOp op : {ReduceOp::kSum, ReduceOp::kAverage}) {
    SCOPED_TRACE(op == ReduceOp::kSum ? "sum" : "average");
    buf.copy_(input);
    EXPECT_TRUE(comm().allreduce_all_finite(buf, op));
    EXPECT_TRUE(torch::equal(buf, reduce_in_rank_order(inputs, op == ReduceOp::kAverage)))
        << "bit for bit";
  }
  if (type != torch::kFloat && type != torch::kDouble) return;
  // One bad element on the last rank, at the start, at a chunk's edge and at the very end.
  for (int64_t at : {int64_t{0}, int64_t{2047}, int64_t{2048}, count / 2, count - 1}) {
    for (double bad : {std::numeric_limits<double>::infinity(), std::nan("")}) {
      SCOPED_TRACE("element " + std::to_string(at) + " is " + std::to_string(bad));
      buf.copy_(input);
      if (comm().rank() == n - 1) buf[at] = bad;
      EXPECT_FALSE(comm().allreduce_all_finite(buf, ReduceOp::kAverage)) << "on every rank";
    }
  }
  // A finite overflow of the sum is not finite either.
  buf.fill_(type == torch::kFloat ? std::numeric_limits<float>::max()
                                  : std::numeric_limits<double>::max());
  EXPECT_EQ(comm().allreduce_all_finite(buf, ReduceOp::kSum), n == 1);
}

TEST(Collectives, BroadcastAllgatherBarrier) {
  const int n = comm().size();
  for (int root = 0; root < n; ++root) {
    torch::Tensor t = torch::full({5, 3}, comm().rank() * 10.0, torch::kDouble);
    comm().broadcast(t, root);
    EXPECT_TRUE(torch::equal(t, torch::full({5, 3}, root * 10.0, torch::kDouble)));
  }
  torch::Tensor mine = torch::full({2}, comm().rank(), torch::kInt);
  torch::Tensor all = comm().allgather(mine);
  ASSERT_EQ(all.sizes(), (std::vector<int64_t>{n, 2}));
  for (int r = 0; r < n; ++r) EXPECT_EQ(all[r][1].item<int>(), r);
  comm().barrier();
  EXPECT_THROW(comm().broadcast(mine, n), CommError);
}

TEST(Collectives, UnsupportedTensorsAreRejected) {
  torch::Tensor b = torch::zeros({4}, torch::kBool);
  EXPECT_THROW(comm().allreduce(b), CommError);
  torch::Tensor strided = torch::zeros({4, 4}).t();
  EXPECT_THROW(comm().allreduce(strided), CommError);
}

TEST(Negotiation, MismatchedGradientsAreNamedNotSummed) {
  if (comm().size() == 1) GTEST_SKIP() << "needs two ranks";
  // A second communicator so the shared one stays usable.
  AllreduceSync sync(std::make_unique<MpiCommunicator>(), {});
  const int64_t rows = comm().rank() == 1 ? 7 : 6;
  NamedTensors grads = {{"fc1.weight", torch::ones({rows, 4})}, {"fc1.bias", torch::ones({4})}};
  try {
    sync.synchronize(grads);
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    const std::string w = e.what();
    EXPECT_NE(w.find("rank 1"), std::string::npos) << w;
    EXPECT_NE(w.find("fc1.weight"), std::string::npos) << w;
    EXPECT_NE(w.find("[7,4]"), std::string::npos) << w;
  }
  EXPECT_TRUE(torch::equal(grads[1].second, torch::ones({4}))) << "nothing may be summed";
}

TEST(Negotiation, AgreeingGradientsAreAveragedAndNaNSkipsEverywhere) {
  AllreduceSync sync(std::make_unique<MpiCommunicator>(), {});
  const int n = comm().size();
  NamedTensors grads = {{"w", torch::full({3, 3}, static_cast<float>(comm().rank()))},
                        {"b", torch::full({3}, 1.0f)}};
  EXPECT_EQ(sync.synchronize(grads), GradientSync::Outcome::kApply);
  EXPECT_TRUE(torch::allclose(grads[0].second, torch::full({3, 3}, (n - 1) / 2.0f)));
  EXPECT_TRUE(torch::allclose(grads[1].second, torch::full({3}, 1.0f)));
  if (comm().rank() == n - 1) grads[1].second[2] = std::numeric_limits<float>::infinity();
  EXPECT_EQ(sync.synchronize(grads), GradientSync::Outcome::kSkip) << "every rank must skip";
}

// place_gradients(): the gradients become views into one reduce buffer (shared memory when every
// rank is on this host), keep their values, are averaged where they are, and get memory of their
// own again when the sync goes.
TEST(Negotiation, PlacedGradientsAreAveragedInPlace) {
  const int n = comm().size();
  const float rank = static_cast<float>(comm().rank());
  torch::Tensor w = torch::zeros({4, 3}), b = torch::zeros({3});
  w.mutable_grad() = torch::full({4, 3}, rank);
  b.mutable_grad() = torch::full({3}, 1.0f);
  const NamedTensors params = {{"w", w}, {"b", b}};
  {
    auto owned = std::make_unique<MpiCommunicator>();
    MpiCommunicator& mine = *owned;
    AllreduceSync sync(std::move(owned), {});
    sync.place_gradients(params);
    EXPECT_TRUE(torch::equal(w.grad(), torch::full({4, 3}, rank))) << "values are kept";
    EXPECT_EQ(static_cast<float*>(w.grad().data_ptr()) + 12, b.grad().data_ptr()) << "one buffer";
    EXPECT_EQ(mine.in_shared_memory(w.grad()), n > 1 && mine.local_size() == n);
    const void* before = w.grad().data_ptr();
    sync.place_gradients(params);  // a second fit() keeps them where they are
    EXPECT_EQ(w.grad().data_ptr(), before);
    for (int step = 0; step < 3; ++step) {
      w.grad().fill_(rank + static_cast<float>(step));
      NamedTensors grads = {{"w", w.grad()}, {"b", b.grad()}};
      ASSERT_EQ(sync.synchronize(grads), GradientSync::Outcome::kApply);
      EXPECT_TRUE(torch::allclose(w.grad(), torch::full({4, 3}, (n - 1) / 2.0f + step)));
      EXPECT_TRUE(torch::allclose(b.grad(), torch::full({3}, 1.0f)));
      EXPECT_EQ(w.grad().data_ptr(), before) << "averaged where they are";
    }
    if (comm().rank() == n - 1) b.grad()[1] = std::numeric_limits<float>::quiet_NaN();
    NamedTensors grads = {{"w", w.grad()}, {"b", b.grad()}};
    EXPECT_EQ(sync.synchronize(grads), GradientSync::Outcome::kSkip) << "every rank must skip";
    b.grad().fill_(2.0f);
  }
  EXPECT_TRUE(torch::equal(b.grad(), torch::full({3}, 2.0f))) << "values outlive the sync";
  b.grad().add_(1);  // its own memory now
}

TEST(Negotiation, RanksThatDisagreeOnPlacedGradientsAreNamed) {
  if (comm().size() == 1) GTEST_SKIP() << "needs two ranks";
  torch::Tensor w = torch::zeros({2, 2});
  w.mutable_grad() = torch::ones({2, 2});
  AllreduceSync sync(std::make_unique<MpiCommunicator>(), {});
  sync.place_gradients({{"w", w}});
  // Rank 1 hands in a copy: it would pack where the others reduce in place.
  NamedTensors grads = {{"w", comm().rank() == 1 ? w.grad().clone() : w.grad()}};
  try {
    sync.synchronize(grads);
    FAIL() << "expected CommError";
  } catch (const CommError& e) {
    const std::string what = e.what();
    EXPECT_NE(what.find("gradients in the fusion buffers"), std::string::npos) << what;
  }
}

}  // namespace
}  // namespace dtrain::distributed

int main(int argc, char** argv) {
  ::testing::InitGoogleTest(&argc, argv);
  dtrain::distributed::ensure_mpi_initialized();
  if (dtrain::distributed::comm().rank() != 0) {
    // One rank's report is enough; failures on other ranks still fail the exit code.
    auto& listeners = ::testing::UnitTest::GetInstance()->listeners();
    delete listeners.Release(listeners.default_result_printer());
  }
  const int rc = RUN_ALL_TESTS();
  int worst = rc;
  MPI_Allreduce(&rc, &worst, 1, MPI_INT, MPI_MAX, MPI_COMM_WORLD);
  return worst;
}
