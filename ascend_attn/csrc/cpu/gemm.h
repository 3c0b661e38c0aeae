// float32 matrix products of the native attention kernels: C[m, n] (+)= A[m, k] * B[k, n], with
// every product rounded once and summed in float32 (fp16 / bf16 operands arrive as exact float32
// values, so products are exact and only the accumulation rounds, as semantics.md asks).
//
// Operand layout, chosen so that no product needs a packing pass of its own:
//   A: any strides, element (i, p) at a[i * a_row + p * a_col]; it is only ever broadcast, so a
//      transposed operand (dS^T, P^T) costs nothing.
//   B: row-major [k, n] with contiguous rows (ldb): its rows are loaded 16 floats at a time. The
//      kernels lay B operands out per tile (K^T, V^T, K or V rows of one head, the Q / dO tiles)
//      with leading dimensions from padded_ld, so that a 16-column panel of k rows stays in L1
//      instead of falling into a few cache sets (K's own row stride N2 * D is often 4 KiB).
//   C: row-major (ldc).
// Sums run over p in order for every element, and each element is formed by one call, so results
// never depend on the thread count.
#pragma once

#include <cstdint>

namespace ascend_attn_cpu {

// Which implementation runs the products on this CPU (run-time choice, see gemm.cpp):
//   kAvx2Micro: a 6 x 16 AVX2+FMA register-blocked micro-kernel (CPUs without AVX-512);
//   kBlas:      the sgemm torch links (MKL on x86 wheels), whose AVX-512 kernels beat the AVX2
//               micro-kernel where AVX-512 exists, and which is the portable fallback;
//   kLoop:      plain C++ loops (no AVX2 and no exported sgemm).
enum class GemmKind : int { kAvx2Micro = 0, kBlas = 1, kLoop = 2 };

GemmKind gemm_kind();
const char* gemm_kind_name(GemmKind kind);

// C[m, n] = A B (accumulate = false) or C[m, n] += A B (accumulate = true).
void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate);

// B operands from rows of a [rows, cols] source with row stride ld_src (K or V rows of one head):
//   pack_transposed: dst[c * ld_dst + r] = src[r * ld_src + c]  (K^T for Q K^T, V^T for dO V^T)
//   pack_rows:       dst[r * ld_dst + c] = src[r * ld_src + c]  (rows at a cache-friendly stride)
void pack_transposed(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst);
void pack_rows(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst);

// A operand in blocks of kBlockRows rows, each [k, kBlockRows] (A element (i, p) at
// a[(i / 6) * 6 * k + p * 6 + i % 6]): the micro-kernel's broadcasts then read one contiguous
// stream instead of six rows (used for the Q tile, laid out once and read for every key block).
constexpr int64_t kBlockRows = 6;
void gemm_blocked_a(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                    int64_t ldc, bool accumulate);

// A leading dimension for rows of n floats: n rounded up to 16, plus 16, so that consecutive rows
// do not map to the same L1 sets (a power-of-two stride of 512 B or more would).
inline int64_t padded_ld(int64_t n) { return (n + 15) / 16 * 16 + 16; }

// Keeps the BLAS single-threaded on this thread for the scope: products run inside our own
// parallel loop, and a BLAS that threads by itself would make sums depend on the thread count.
struct SingleThreadedGemm {
  SingleThreadedGemm();
  ~SingleThreadedGemm();
  int previous;
};

}  // namespace ascend_attn_cpu
