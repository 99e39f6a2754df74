#include <gtest/gtest.h>
#include <torch/torch.h>

#include <pthread.h>

#include <atomic>
#include <csignal>
#include <limits>
#include <thread>
#include <tuple>
#include <vector>

#include "core/blas.h"

namespace dtrain {
namespace {

enum class Way { kChosen, kOnednn, kCblas, kLibtorch };

/// Runs one way; false where it cannot be used in this process (no such library loaded).
bool call(Way way, bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
          int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  switch (way) {
    case Way::kOnednn:
      return detail::sgemm_by_onednn(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
    case Way::kCblas:
      return detail::sgemm_by_cblas(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
    case Way::kLibtorch:
      detail::sgemm_by_libtorch(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
      return true;
    case Way::kChosen:
      break;
  }
  sgemm(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
  return true;
}

// Every way of sgemm (the one it picks; oneDNN's, the process's CBLAS and LibTorch's mm, each
// alone) against LibTorch's matmul, for every transpose pair, overwrite (ignoring C's old
// contents) and add, row strides wider than the rows, and empty sizes.
class Sgemm : public ::testing::TestWithParam<std::tuple<bool, bool, Way>> {};

TEST_P(Sgemm, MatchesLibTorchOnStridedRowMajorMatrices) {
  const auto [trans_a, trans_b, way] = GetParam();
  float probe = 0.0f;
  const float one = 1.0f;
  if (!call(way, false, false, 1, 1, 1, &one, 1, &one, 1, 0.0f, &probe, 1)) {
    GTEST_SKIP() << "this way's library is not in the process";
  }
  ASSERT_EQ(probe, 1.0f);
  torch::manual_seed(7);
  for (const auto& [m, n, k] : {std::tuple<int64_t, int64_t, int64_t>{5, 7, 3},
                                {1, 1, 1},
                                {50, 150, 784},
                                {150, 784, 50},
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
      ASSERT_TRUE(call(way, trans_a, trans_b, m, n, k, a.data_ptr<float>(), a.size(1),
                       b.data_ptr<float>(), b.size(1), beta, c.data_ptr<float>(), c.size(1)))
          << m << "x" << n << "x" << k << " beta " << beta;
      EXPECT_TRUE(torch::allclose(c.narrow(1, 0, n), expected, 1e-4, 1e-4))
          << m << "x" << n << "x" << k << " beta " << beta;
      EXPECT_TRUE(torch::equal(c.narrow(1, n, 3), before.narrow(1, n, 3)));
    }
  }
}

// Debian's LibTorch loads both oneDNN and OpenBLAS as libraries of their own: sgemm must find
// them here (pip wheels link them in unexported, and fall back).
TEST(Sgemm, FindsOnednnAndCblasInThisProcess) {
  float c = 0.0f;
  const float a = 2.0f, b = 3.0f;
  EXPECT_TRUE(detail::sgemm_by_onednn(false, false, 1, 1, 1, &a, 1, &b, 1, 0.0f, &c, 1));
  EXPECT_EQ(c, 6.0f);
  EXPECT_TRUE(detail::sgemm_by_cblas(false, false, 1, 1, 1, &a, 1, &b, 1, 1.0f, &c, 1));
  EXPECT_EQ(c, 12.0f);
}

volatile std::sig_atomic_t g_signals_handled = 0;
extern "C" void count_signal(int) { g_signals_handled = g_signals_handled + 1; }

// oneDNN 2.x's JIT kernels point the stack pointer into a heap workspace (oneDNN issue #4845): a
// handler run on the thread meanwhile wrote its frame over malloc's chunks, and glibc aborted
// ("corrupted size vs. prev_size while consolidating") after some 4000 of these calls, every
// time; a SIGTERM during a training step did the same in 2 runs of 200. oneDNN's way, and the one
// sgemm picks, take a storm of signals aimed at the calling thread while they multiply and the
// heap churns, and must stay correct. (The BLAS ways are not at risk, and OpenBLAS's threads crawl
// under such a storm.)
TEST(Sgemm, SurvivesSignalsDuringTheCall) {
  struct sigaction action {
  }, previous{};
  action.sa_handler = count_signal;
  sigemptyset(&action.sa_mask);
  action.sa_flags = SA_RESTART;
  ASSERT_EQ(sigaction(SIGUSR2, &action, &previous), 0);
  const int64_t m = 150, n = 50, k = 784;
  std::vector<float> a(static_cast<size_t>(m * k), 0.5f), b(static_cast<size_t>(k * n), 0.25f),
      c(static_cast<size_t>(m * n));
  for (Way way : {Way::kOnednn, Way::kChosen}) {
    std::atomic<bool> done{false};
    const pthread_t target = pthread_self();
    std::thread storm([&] {
      while (!done.load()) {
        pthread_kill(target, SIGUSR2);
        for (volatile int spin = 0; spin < 2000; spin = spin + 1) {
        }
      }
    });
    g_signals_handled = 0;
    bool usable = true;
    for (int i = 0; i < 5000 && usable; ++i) {
      std::vector<float> churn(static_cast<size_t>(1000 + i), 1.0f);
      usable = call(way, false, false, m, n, k, a.data(), k, b.data(), n, 0.0f, c.data(), n);
      if (usable && c[static_cast<size_t>(i % (m * n))] != static_cast<float>(k) * 0.125f) {
        ADD_FAILURE() << "wrong product at call " << i;
        break;
      }
    }
    done.store(true);
    storm.join();
    if (!usable) continue;  // (no oneDNN in this process)
    // Signals blocked during a call are delivered after it: the handler still ran.
    EXPECT_GT(g_signals_handled, 0);
  }
  sigaction(SIGUSR2, &previous, nullptr);
}

std::string way_name(const ::testing::TestParamInfo<std::tuple<bool, bool, Way>>& info) {
  const auto [trans_a, trans_b, way] = info.param;
  static const char* names[] = {"chosen", "onednn", "cblas", "libtorch"};
  return std::string(trans_a ? "T" : "N") + (trans_b ? "T" : "N") + "_" +
         names[static_cast<int>(way)];
}

INSTANTIATE_TEST_SUITE_P(TransposesAndWays, Sgemm,
                         ::testing::Combine(::testing::Bool(), ::testing::Bool(),
                                            ::testing::Values(Way::kChosen, Way::kOnednn,
                                                              Way::kCblas, Way::kLibtorch)),
                         way_name);

}  // namespace
}  // namespace dtrain
