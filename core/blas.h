// The BLAS that LibTorch loaded, called directly where LibTorch's per-op dispatch would cost more
// than the work: the MLP's team step runs some thirty small GEMMs per training step.
#pragma once

#include <cstdint>

namespace dtrain {

/// Sets OpenBLAS's own thread count (at::set_num_threads does not size it). No-op for other BLAS.
void set_blas_threads(int threads);

/// One single-precision GEMM on row-major matrices: C = op(A) op(B) + beta C, where op(A) is
/// m x k (A stored k x m when `trans_a`), op(B) k x n (stored n x k when `trans_b`) and C m x n,
/// each with its row stride (lda, ldb, ldc). Through the `cblas_sgemm` of the BLAS already in
/// the process (found at run time, so nothing more is linked); through LibTorch's mm where there
/// is none or a size does not fit its 32-bit int. Runs on the calling thread's BLAS settings.
void sgemm(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a, int64_t lda,
           const float* b, int64_t ldb, float beta, float* c, int64_t ldc);

namespace detail {
/// sgemm's way without a CBLAS in the process (LibTorch's mm on views of the same memory).
void sgemm_by_libtorch(bool trans_a, bool trans_b, int64_t m, int64_t n, int64_t k, const float* a,
                       int64_t lda, const float* b, int64_t ldb, float beta, float* c, int64_t ldc);
}  // namespace detail

}  // namespace dtrain
