// The BLAS that LibTorch loaded, called directly where LibTorch's per-op dispatch would cost more
// than the work: the MLP's team step runs some thirty small GEMMs per training step.
#pragma once

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
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

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
