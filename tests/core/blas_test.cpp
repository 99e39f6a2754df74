#include <gtest/gtest.h>
#include <torch/torch.h>

#include <limits>
#include <tuple>

#include "core/blas.h"

namespace dtrain {
namespace {

// Both ways of sgemm (the process's CBLAS, and LibTorch's mm where there is none) against
// LibTorch's matmul, for every transpose pair, overwrite (ignoring C's old contents) and add, row
// strides wider than the rows, and empty sizes.
class Sgemm : public ::testing::TestWithParam<std::tuple<bool, bool, bool>> {};

TEST_P(Sgemm, MatchesLibTorchOnStridedRowMajorMatrices) {
  const auto [trans_a, trans_b, through_libtorch] = GetParam();
  torch::manual_seed(7);
  for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{5, 7, 3},
                                {1, 1, 1},
                                {50, 150, 784},
                                {0, 4, 3},
                                {4, 0, 3},
                                {4, 5, 0}}) {
    for (const float beta : {0.0f, 1.0f}) {
      // Stored shapes (rows x cols) with 3 spare columns each, which must stay untouched.
      const int64_t a_rows = trans_a ? k : m, a_cols = trans_a ? m : k;
      const int64_t b_rows = trans_b ? n : k, b_cols = trans_b ? k : n;
      const torch::Tensor a = torch::randn({a_rows, a_cols + 3});
      const torch::Tensor b = torch::randn({b_rows, b_cols + 3});
      torch::Tensor c = torch::randn({m, n + 3});
      // With beta 0, C's old contents are not read: not even a NaN may reach the result.
      if (beta == 0.0f) c.narrow(1, 0, n).fill_(std::numeric_limits<float>::quiet_NaN());
      const torch::Tensor before = c.clone();
      const torch::Tensor op_a = trans_a ? a.narrow(1, 0, a_cols).t() : a.narrow(1, 0, a_cols);
      const torch::Tensor op_b = trans_b ? b.narrow(1, 0, b_cols).t() : b.narrow(1, 0, b_cols);
      const torch::Tensor expected =
          beta == 0.0f ? op_a.matmul(op_b) : op_a.matmul(op_b) + beta * before.narrow(1, 0, n);
      const auto call = through_libtorch ? detail::sgemm_by_libtorch : sgemm;
      call(trans_a, trans_b, m, n, k, a.data_ptr<float>(), a.size(1), b.data_ptr<float>(),
           b.size(1), beta, c.data_ptr<float>(), c.size(1));
      EXPECT_TRUE(torch::allclose(c.narrow(1, 0, n), expected, 1e-4, 1e-4))
          << m << "x" << n << "x" << k << " beta " << beta;
      EXPECT_TRUE(torch::equal(c.narrow(1, n, 3), before.narrow(1, n, 3)));
    }
  }
}

INSTANTIATE_TEST_SUITE_P(TransposesAndWays, Sgemm,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::Bool()));

}  // namespace
}  // namespace dtrain
