// float32 products of the native attention kernels (see gemm.h): an AVX2+FMA micro-kernel, the
// BLAS torch exports, or plain loops, chosen once at run time.
#include "gemm.h"

#include <torch/library.h>

#include <algorithm>

#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

// Fortran BLAS and MKL's thread control, as libtorch_cpu exports them on x86 (MKL). Weak: a torch
// built without them still loads this library and another path runs.
extern "C" {
void sgemm_(const char* transa, const char* transb, const int* m, const int* n, const int* k, const float* alpha,
            const float* a, const int* lda, const float* b, const int* ldb, const float* beta, float* c,
            const int* ldc) __attribute__((weak));
int MKL_Set_Num_Threads_Local(int n) __attribute__((weak));  // the C entry (lower case is Fortran)
}

namespace ascend_attn_cpu {
namespace {

// ----------------------------------------------------------------------------- plain loops
void gemm_loop(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  for (int64_t i = 0; i < m; ++i) {
    float* ci = c + i * ldc;
    if (!accumulate) std::fill(ci, ci + n, 0.f);
    for (int64_t p = 0; p < k; ++p) {
      const float av = a[i * a_row + p * a_col];
      const float* bp = b + p * ldb;
      for (int64_t j = 0; j < n; ++j) ci[j] += av * bp[j];
    }
  }
}

// ----------------------------------------------------------------------------- BLAS
// Row-major C = A B is column-major C^T = B^T A^T: B is a column-major [n, k] matrix with leading
// dimension ldb ('N'); A^T is [k, m] column-major with leading dimension a_row when A's rows are
// contiguous ('N'), or A is column-major [m, k] with leading dimension a_col when its columns are ('T').
bool gemm_blas(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
               int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (sgemm_ == nullptr || (a_col != 1 && a_row != 1)) return false;
  const char tb = 'N', ta = a_col == 1 ? 'N' : 'T';
  const int in = int(n), im = int(m), ik = int(k), ildb = int(ldb), ilda = int(a_col == 1 ? a_row : a_col),
            ildc = int(ldc);
  const float one = 1.f, beta = accumulate ? 1.f : 0.f;
  sgemm_(&tb, &ta, &in, &im, &ik, &one, b, &ildb, a, &ilda, &beta, c, &ildc);
  return true;
}

// ----------------------------------------------------------------------------- AVX2 micro-kernel
#if defined(__x86_64__)
#define AVX2_FN __attribute__((target("avx2,fma")))

// Lanes of a 16-column panel that exist when only `cols` (< 16) columns are left.
AVX2_FN inline void tail_masks(int64_t cols, __m256i& m0, __m256i& m1) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  m0 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols)), lane);
  m1 = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(cols - 8)), lane);
}

// How A is addressed: rows contiguous (a_col == 1: Q, P, dS), columns contiguous (a_row == 1:
// dS^T, P^T), or any strides. The first two need no per-row pointer updates in the k loop (the
// loop is otherwise bound by instruction issue, not by the FMAs).
enum class AMode { kRows, kCols, kStrided };

// C[MR, 16] (+)= A[MR, k] B[k, 16]: 2 * MR accumulators in registers, one pass over k. The
// accumulators are named variables: GCC spills an array of __m256 to the stack every iteration.
// TAIL: the panel has fewer than 16 columns (masked loads and stores, nothing read past them).
template <int MR, bool TAIL, AMode MODE>
AVX2_FN void micro_6x16(int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
                        float* c, int64_t ldc, bool accumulate, int64_t cols) {
  __m256i m0 = _mm256_set1_epi32(-1), m1 = m0;
  if (TAIL) tail_masks(cols, m0, m1);
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = a, *a1 = a + a_row, *a2 = a + 2 * a_row, *a3 = a + 3 * a_row, *a4 = a + 4 * a_row,
              *a5 = a + 5 * a_row;
  for (int64_t p = 0; p < k; ++p, b += ldb) {
    const __m256 b0 = TAIL ? _mm256_maskload_ps(b, m0) : _mm256_loadu_ps(b);
    const __m256 b1 = TAIL ? _mm256_maskload_ps(b + 8, m1) : _mm256_loadu_ps(b + 8);
    __m256 av;
#define ASCEND_ATTN_ROW(I)                                                                 \
  if (MR > I) {                                                                            \
    if (MODE == AMode::kRows) av = _mm256_broadcast_ss(a##I + p);                          \
    else if (MODE == AMode::kCols) av = _mm256_broadcast_ss(a + I);                        \
    else { av = _mm256_broadcast_ss(a##I); a##I += a_col; }                                \
    c##I##0 = _mm256_fmadd_ps(av, b0, c##I##0);                                            \
    c##I##1 = _mm256_fmadd_ps(av, b1, c##I##1);                                            \
  }
    ASCEND_ATTN_ROW(0) ASCEND_ATTN_ROW(1) ASCEND_ATTN_ROW(2) ASCEND_ATTN_ROW(3) ASCEND_ATTN_ROW(4) ASCEND_ATTN_ROW(5)
#undef ASCEND_ATTN_ROW
    if (MODE == AMode::kCols) a += a_col;
  }
#define ASCEND_ATTN_STORE(I)                                                                        \
  if (MR > I) {                                                                                     \
    float* ci = c + I * ldc;                                                                        \
    if (TAIL) {                                                                                     \
      if (accumulate) {                                                                             \
        c##I##0 = _mm256_add_ps(c##I##0, _mm256_maskload_ps(ci, m0));                               \
        c##I##1 = _mm256_add_ps(c##I##1, _mm256_maskload_ps(ci + 8, m1));                           \
      }                                                                                             \
      _mm256_maskstore_ps(ci, m0, c##I##0);                                                         \
      _mm256_maskstore_ps(ci + 8, m1, c##I##1);                                                     \
    } else {                                                                                        \
      if (accumulate) {                                                                             \
        c##I##0 = _mm256_add_ps(c##I##0, _mm256_loadu_ps(ci));                                      \
        c##I##1 = _mm256_add_ps(c##I##1, _mm256_loadu_ps(ci + 8));                                  \
      }                                                                                             \
      _mm256_storeu_ps(ci, c##I##0);                                                                \
      _mm256_storeu_ps(ci + 8, c##I##1);                                                            \
    }                                                                                               \
  }
  ASCEND_ATTN_STORE(0) ASCEND_ATTN_STORE(1) ASCEND_ATTN_STORE(2) ASCEND_ATTN_STORE(3) ASCEND_ATTN_STORE(4)
  ASCEND_ATTN_STORE(5)
#undef ASCEND_ATTN_STORE
}

template <bool TAIL, AMode MODE>
AVX2_FN void micro_rows(int64_t rows, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                        int64_t ldb, float* c, int64_t ldc, bool accumulate, int64_t cols) {
  switch (rows) {
    case 1: return micro_6x16<1, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
    case 2: return micro_6x16<2, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
    case 3: return micro_6x16<3, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
    case 4: return micro_6x16<4, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
    case 5: return micro_6x16<5, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
    default: return micro_6x16<6, TAIL, MODE>(k, a, a_row, a_col, b, ldb, c, ldc, accumulate, cols);
  }
}

// The two cache lines a 16-float row piece may touch (one when it is 64-byte aligned).
AVX2_FN inline void prefetch_piece(const float* p) {
  _mm_prefetch(reinterpret_cast<const char*>(p), _MM_HINT_T0);
  _mm_prefetch(reinterpret_cast<const char*>(p + 15), _MM_HINT_T0);
}

// Panel by panel (16 columns of B, which stay in L1), 6 rows of A at a time. In the attention
// kernels B and C are often not in L2 when a product starts (the K^T / V^T / K block of the next key
// block, the dK / dV rows of the item), and a demand miss per row of B stalls the first 6-row block
// of every panel; so while one panel runs, the rows of the next are prefetched a few per block, and
// the C rows of a block (read back when accumulating) are prefetched before its k loop. Measured on
// an emulation of the backward's five products (L = 2048, D = 128, Zen 3): products 0-2 ran at
// 57 GFLOP/s and the dK / dV ones at 42 without, against 75-85 for the same calls on hot operands.
template <AMode MODE>
AVX2_FN void gemm_panels(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col,
                         int64_t a_block, const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  const int64_t blocks = (m + 5) / 6, rows_ahead = (k + blocks - 1) / blocks;
  for (int64_t j = 0; j < n; j += 16) {
    const int64_t cols = std::min<int64_t>(16, n - j);
    int64_t next_row = j + 16 < n ? 0 : k;  // rows of the next panel already prefetched
    for (int64_t i = 0; i < m; i += 6) {
      const int64_t rows = std::min<int64_t>(6, m - i);
      for (const int64_t end = std::min(k, next_row + rows_ahead); next_row < end; ++next_row)
        prefetch_piece(b + next_row * ldb + j + 16);
      if (accumulate)
        for (int64_t r = 0; r < rows; ++r) prefetch_piece(c + (i + r) * ldc + j);
      const float* a_i = a + i / 6 * a_block;
      float* c_i = c + i * ldc + j;
      if (cols == 16)
        micro_rows<false, MODE>(rows, k, a_i, a_row, a_col, b + j, ldb, c_i, ldc, accumulate, cols);
      else
        micro_rows<true, MODE>(rows, k, a_i, a_row, a_col, b + j, ldb, c_i, ldc, accumulate, cols);
    }
  }
}

AVX2_FN void gemm_avx2(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col,
                       const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (a_col == 1) return gemm_panels<AMode::kRows>(m, n, k, a, a_row, a_col, 6 * a_row, b, ldb, c, ldc, accumulate);
  if (a_row == 1) return gemm_panels<AMode::kCols>(m, n, k, a, a_row, a_col, 6 * a_row, b, ldb, c, ldc, accumulate);
  gemm_panels<AMode::kStrided>(m, n, k, a, a_row, a_col, 6 * a_row, b, ldb, c, ldc, accumulate);
}

// 8 x 8 block transpose: dst[c][r] = src[r][c].
AVX2_FN inline void transpose8x8(const float* src, int64_t ld_src, float* dst, int64_t ld_dst) {
  __m256 r0 = _mm256_loadu_ps(src), r1 = _mm256_loadu_ps(src + ld_src), r2 = _mm256_loadu_ps(src + 2 * ld_src),
         r3 = _mm256_loadu_ps(src + 3 * ld_src), r4 = _mm256_loadu_ps(src + 4 * ld_src),
         r5 = _mm256_loadu_ps(src + 5 * ld_src), r6 = _mm256_loadu_ps(src + 6 * ld_src),
         r7 = _mm256_loadu_ps(src + 7 * ld_src);
  __m256 t0 = _mm256_unpacklo_ps(r0, r1), t1 = _mm256_unpackhi_ps(r0, r1), t2 = _mm256_unpacklo_ps(r2, r3),
         t3 = _mm256_unpackhi_ps(r2, r3), t4 = _mm256_unpacklo_ps(r4, r5), t5 = _mm256_unpackhi_ps(r4, r5),
         t6 = _mm256_unpacklo_ps(r6, r7), t7 = _mm256_unpackhi_ps(r6, r7);
  r0 = _mm256_shuffle_ps(t0, t2, 0x44); r1 = _mm256_shuffle_ps(t0, t2, 0xee);
  r2 = _mm256_shuffle_ps(t1, t3, 0x44); r3 = _mm256_shuffle_ps(t1, t3, 0xee);
  r4 = _mm256_shuffle_ps(t4, t6, 0x44); r5 = _mm256_shuffle_ps(t4, t6, 0xee);
  r6 = _mm256_shuffle_ps(t5, t7, 0x44); r7 = _mm256_shuffle_ps(t5, t7, 0xee);
  _mm256_storeu_ps(dst, _mm256_permute2f128_ps(r0, r4, 0x20));
  _mm256_storeu_ps(dst + ld_dst, _mm256_permute2f128_ps(r1, r5, 0x20));
  _mm256_storeu_ps(dst + 2 * ld_dst, _mm256_permute2f128_ps(r2, r6, 0x20));
  _mm256_storeu_ps(dst + 3 * ld_dst, _mm256_permute2f128_ps(r3, r7, 0x20));
  _mm256_storeu_ps(dst + 4 * ld_dst, _mm256_permute2f128_ps(r0, r4, 0x31));
  _mm256_storeu_ps(dst + 5 * ld_dst, _mm256_permute2f128_ps(r1, r5, 0x31));
  _mm256_storeu_ps(dst + 6 * ld_dst, _mm256_permute2f128_ps(r2, r6, 0x31));
  _mm256_storeu_ps(dst + 7 * ld_dst, _mm256_permute2f128_ps(r3, r7, 0x31));
}

AVX2_FN void pack_transposed_avx2(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst,
                                  int64_t ld_dst) {
  const int64_t r8 = rows / 8 * 8, c8 = cols / 8 * 8;
  for (int64_t r = 0; r < r8; r += 8)
    for (int64_t c = 0; c < c8; c += 8) transpose8x8(src + r * ld_src + c, ld_src, dst + c * ld_dst + r, ld_dst);
  for (int64_t r = 0; r < rows; ++r)  // the edges
    for (int64_t c = (r < r8 ? c8 : 0); c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
}
#endif

GemmKind choose() {
  const CpuFeatures& f = cpu_features();
  // With AVX-512 the BLAS kernels are twice as wide as the AVX2 micro-kernel.
  if (f.avx2 && !(f.avx512f && sgemm_ != nullptr)) return GemmKind::kAvx2Micro;
  return sgemm_ != nullptr ? GemmKind::kBlas : GemmKind::kLoop;
}

}  // namespace

GemmKind gemm_kind() {
  static const GemmKind kind = choose();
  return kind;
}

const char* gemm_kind_name(GemmKind kind) {
  switch (kind) {
    case GemmKind::kAvx2Micro: return "avx2 6x16 micro-kernel";
    case GemmKind::kBlas: return "blas sgemm";
    default: return "c++ loops";
  }
}

void gemm(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b, int64_t ldb,
          float* c, int64_t ldc, bool accumulate) {
  if (m <= 0 || n <= 0) return;
  if (k <= 0) {
    if (!accumulate)
      for (int64_t i = 0; i < m; ++i) std::fill(c + i * ldc, c + i * ldc + n, 0.f);
    return;
  }
  switch (gemm_kind()) {
#if defined(__x86_64__)
    case GemmKind::kAvx2Micro: return gemm_avx2(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate);
#endif
    case GemmKind::kBlas:
      if (gemm_blas(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate)) return;
      break;
    default: break;
  }
  gemm_loop(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate);
}

void pack_transposed(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst) {
#if defined(__x86_64__)
  if (cpu_features().avx2) return pack_transposed_avx2(src, ld_src, rows, cols, dst, ld_dst);
#endif
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[c * ld_dst + r] = src[r * ld_src + c];
}

void pack_rows(const float* src, int64_t ld_src, int64_t rows, int64_t cols, float* dst, int64_t ld_dst) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * ld_src, src + r * ld_src + cols, dst + r * ld_dst);
}

void gemm_blocked_a(int64_t m, int64_t n, int64_t k, const float* a, const float* b, int64_t ldb, float* c,
                    int64_t ldc, bool accumulate) {
#if defined(__x86_64__)
  if (gemm_kind() == GemmKind::kAvx2Micro)
    return gemm_panels<AMode::kCols>(m, n, k, a, 1, kBlockRows, kBlockRows * k, b, ldb, c, ldc, accumulate);
#endif
  for (int64_t i0 = 0; i0 < m; i0 += kBlockRows)  // one column-contiguous block at a time
    gemm(std::min<int64_t>(kBlockRows, m - i0), n, k, a + i0 * k, 1, kBlockRows, b, ldb, c + i0 * ldc, ldc, accumulate);
}

SingleThreadedGemm::SingleThreadedGemm() : previous(MKL_Set_Num_Threads_Local ? MKL_Set_Num_Threads_Local(1) : 0) {}
SingleThreadedGemm::~SingleThreadedGemm() {
  if (MKL_Set_Num_Threads_Local) MKL_Set_Num_Threads_Local(previous);
}

}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def("gemm_kind() -> str",
        [] { return std::string(ascend_attn_cpu::gemm_kind_name(ascend_attn_cpu::gemm_kind())); });
}
