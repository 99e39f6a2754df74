// The BLAS that LibTorch loaded, called directly where LibTorch's per-op dispatch would cost more
// than the work: the MLP's team step runs some thirty small GEMMs per training step.
#pragma once

#include <csignal>
#include <cstdint>

namespace dtrain {

/// Sets OpenBLAS's own thread count (at::set_num_threads does not size it). No-op for other BLAS.
void set_blas_threads(int threads);

/// One single-precision GEMM on row-major matrices: C = op(A) op(B) + beta C, where op(A) is
/// m x k (A stored k x m when `trans_a`), op(B) k x n (stored n x k when `trans_b`) and C m x n,
/// each with its row stride (lda, ldb, ldc). Through what is already in the process, found at run
/// time so that nothing more is linked: oneDNN's `dnnl_sgemm` where LibTorch loaded oneDNN as a
/// library of its own (Debian's does; its JIT kernels are 8 % faster than OpenBLAS's at the MLP's
/// shapes here), else the `cblas_sgemm` of LibTorch's BLAS, else LibTorch's mm. Runs on the
/// calling thread's settings (OpenMP's team size for oneDNN, OpenBLAS's own for OpenBLAS).
///
/// oneDNN 2.x's JIT sgemm kernels point the stack pointer into a heap workspace while they run,
/// so a signal handler run on that thread meanwhile writes its frame over the heap (oneDNN issue
/// #4845, fixed in 3.x by PR #4855; Debian 12 has 2.6): a SIGTERM during a step corrupted malloc's
/// chunks. Its calls therefore run with the calling thread's asynchronous signals blocked
/// (AsyncSignalsBlocked): a signal sent meanwhile is delivered to another thread, or to this one
/// once the call returns.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

/// Blocks every signal that can arrive asynchronously (all but SIGSEGV, SIGBUS, SIGFPE, SIGILL,
/// SIGTRAP and SIGABRT, which a thread raises itself) on the calling thread while it lives, and
/// restores the mask after. Nests: only the outermost guard on a thread makes the two system
/// calls (about 1 us together here), so a ThreadTeam holds one for each whole run and its GEMMs
/// pay nothing.
class AsyncSignalsBlocked {
 public:
  AsyncSignalsBlocked();
  ~AsyncSignalsBlocked();
  AsyncSignalsBlocked(const AsyncSignalsBlocked&) = delete;
  AsyncSignalsBlocked& operator=(const AsyncSignalsBlocked&) = delete;

 private:
  bool outermost_;
  sigset_t previous_;
};

namespace detail {
/// sgemm's ways, each usable alone (the first two return false where they cannot be used: no
/// such library in the process, a size its API cannot take, an argument it rejects).
bool sgemm_by_onednn(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                     int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
bool sgemm_by_cblas(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                    int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
/// LibTorch's mm on views of the same memory.
void sgemm_by_libtorch(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
}  // namespace detail

}  // namespace dtrain
