#include "core/blas.h"

#include <dlfcn.h>
#include <pthread.h>
#include <torch/types.h>

#include <cstring>
#include <initializer_list>
#include <limits>

namespace dtrain {

namespace {

// oneDNN's C API (dnnl.h, 2.x and 3.x): row-major, 64-bit sizes, 0 (dnnl_success) on success.
using DnnlSgemm = int (*)(char trans_a, char trans_b, int64_t m, int64_t n, int64_t k, float alpha,
                          const float* a, int64_t lda, const float* b, int64_t ldb, float beta,
                          float* c, int64_t ldc);

// The CBLAS ABI: enum values fixed by the standard, 32-bit ints (LP64 BLAS, as Debian's and
// LibTorch's are).
using CblasSgemm = void (*)(int order, int trans_a, int trans_b, int m, int n, int k, float alpha,
                            const float* a, int lda, const float* b, int ldb, float beta, float* c,
                            int ldc);
constexpr int kRowMajor = 101;
constexpr int kNoTrans = 111;
constexpr int kTrans = 112;

DnnlSgemm dnnl_sgemm_in_process() {
  static const auto fn = reinterpret_cast<DnnlSgemm>(dlsym(RTLD_DEFAULT, "dnnl_sgemm"));
  return fn;
}

CblasSgemm cblas_sgemm_in_process() {
  static const auto fn = reinterpret_cast<CblasSgemm>(dlsym(RTLD_DEFAULT, "cblas_sgemm"));
  return fn;
}

/// A row-major rows x cols matrix with row stride ld at p, as a tensor viewing that memory.
torch::Tensor view(const float* p, int64_t rows, int64_t cols, int64_t ld) {
  return torch::from_blob(const_cast<float*>(p), {rows, cols}, {ld, 1}, torch::kFloat32);
}

}  // namespace

void set_blas_threads(int threads) {
  using SetThreads = void (*)(int);
  if (auto fn = reinterpret_cast<SetThreads>(dlsym(RTLD_DEFAULT, "openblas_set_num_threads"))) {
    fn(threads);
  }
}

void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  if (m == 0 || n == 0) return;
  if (detail::sgemm_by_onednn(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)) return;
  if (detail::sgemm_by_cblas(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc)) return;
  detail::sgemm_by_libtorch(trans_a, trans_b, m, n, k, a, lda, b, ldb, beta, c, ldc);
}

namespace {
thread_local int t_signal_guards = 0;  // AsyncSignalsBlocked alive on this thread
}  // namespace

AsyncSignalsBlocked::AsyncSignalsBlocked() : outermost_(t_signal_guards++ == 0) {
  if (!outermost_) return;
  sigset_t blocked;
  sigfillset(&blocked);
  for (int sig : {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGTRAP, SIGABRT}) sigdelset(&blocked, sig);
  pthread_sigmask(SIG_BLOCK, &blocked, &previous_);
}

AsyncSignalsBlocked::~AsyncSignalsBlocked() {
  --t_signal_guards;
  if (outermost_) pthread_sigmask(SIG_SETMASK, &previous_, nullptr);
}

namespace detail {

bool sgemm_by_onednn(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const DnnlSgemm fn = dnnl_sgemm_in_process();
  if (fn == nullptr) return false;
  if (m == 0 || n == 0) return true;
  if (k == 0) {  // C = beta C: oneDNN 2.6 rejects it, or (NT) returns leaving C as it was
    for (int64_t i = 0; i < m; ++i) {
      float* row = c + i * ldc;
      for (int64_t j = 0; j < n; ++j) row[j] = beta == 0.0f ? 0.0f : beta * row[j];
    }
    return true;
  }
  const AsyncSignalsBlocked no_handler_on_the_workspace;  // see sgemm() in blas.h
  return fn(trans_a ? 'T' : 'N', trans_b ? 'T' : 'N', m, n, k, 1.0f, a, lda, b, ldb, beta, c,
            ldc) == 0;
}

bool sgemm_by_cblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc) {
  const CblasSgemm fn = cblas_sgemm_in_process();
  bool fits = fn != nullptr;
  for (int64_t v : {m, n, k, lda, ldb, ldc}) fits = fits && v <= std::numeric_limits<int>::max();
  if (!fits) return false;
  if (m == 0 || n == 0) return true;
  if (beta == 0.0f) {
    // OpenBLAS clears C for beta 0 in a pass of its own (sgemm_beta) that runs at a sixth of
    // memset's speed: 37 us of a 140 us 150x784x50 GEMM here. Cleared here and added to, the
    // result has the same bits (0 + x is x; C's old contents, NaN included, are not read).
    for (int64_t i = 0; i < m; ++i)
      std::memset(c + i * ldc, 0, static_cast<size_t>(n) * sizeof(float));
    beta = 1.0f;
  }
  fn(kRowMajor, trans_a ? kTrans : kNoTrans, trans_b ? kTrans : kNoTrans, static_cast<int>(m),
     static_cast<int>(n), static_cast<int>(k), 1.0f, a, static_cast<int>(lda), b,
     static_cast<int>(ldb), beta, c, static_cast<int>(ldc));
  return true;
}

void sgemm_by_libtorch(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c,
                       int64_t ldc) {
  if (m == 0 || n == 0) return;
  const torch::Tensor op_a = trans_a ? view(a, k, m, lda).t() : view(a, m, k, lda);
  const torch::Tensor op_b = trans_b ? view(b, n, k, ldb).t() : view(b, k, n, ldb);
  torch::Tensor out = view(c, m, n, ldc);
  if (beta == 0.0f) {
    at::mm_out(out, op_a, op_b);
  } else {
    out.addmm_(op_a, op_b, beta, 1.0);
  }
}

}  // namespace detail

}  // namespace dtrain
