// Row conversions (row_convert.h): AVX2 + F16C where the CPU has it, else scalar code with the same bits.
#include "row_convert.h"

#include <algorithm>

namespace ascend_attn_cpu {
namespace {

#if defined(__x86_64__)
ASCEND_ATTN_AVX2 void load_row_avx2(const uint16_t* h, ElemType type, int64_t n, float* dst) {
  int64_t c = 0;
  if (type == ElemType::f16) {
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(dst + c, load8_f16(h + c));
    for (; c < n; ++c) dst[c] = fp16_to_float(h[c]);
  } else {
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(dst + c, load8_bf16(h + c));
    for (; c < n; ++c) dst[c] = bf16_to_float(h[c]);
  }
}

// The first n / 8 * 8 elements; returns how many it wrote. (Scalar, this loop was 40 % of a short
// IFA decode call: 32k outputs at B=8, Nq=32, D=128.)
ASCEND_ATTN_AVX2 int64_t store_row_avx2(const float* src, int64_t n, ElemType type, uint16_t* h) {
  int64_t c = 0;
  if (type == ElemType::f16)
    for (; c + 8 <= n; c += 8) store8_f16_half_away(h + c, _mm256_loadu_ps(src + c));
  else
    for (; c + 8 <= n; c += 8) store8_bf16_rne(h + c, _mm256_loadu_ps(src + c));
  return c;
}
#endif

}  // namespace

void load_row(const void* src, ElemType type, int64_t offset, int64_t n, float* dst) {
  if (type == ElemType::f32) {
    const float* f = static_cast<const float*>(src) + offset;
    std::copy(f, f + n, dst);
    return;
  }
  const auto* h = static_cast<const uint16_t*>(src) + offset;
#if defined(__x86_64__)
  if (cpu_features().avx2) return load_row_avx2(h, type, n, dst);
#endif
  for (int64_t c = 0; c < n; ++c) dst[c] = type == ElemType::f16 ? fp16_to_float(h[c]) : bf16_to_float(h[c]);
}

void load_rows(const void* src, ElemType type, int64_t offset, int64_t stride, int64_t rows, int64_t n, float* dst,
               int64_t dst_ld) {
  constexpr int64_t kRowsAhead = 8;  // 4, 8 and 16 rows ran alike (fp16 / bf16 FA forward, T=4k)
  const int64_t esize = type == ElemType::f32 ? 4 : 2;
  const char* base = static_cast<const char*>(src) + offset * esize;
  for (int64_t r = 0; r < rows; ++r) {
    if (r + kRowsAhead < rows) {  // every cache line of the row kRowsAhead ahead
      const uintptr_t a = reinterpret_cast<uintptr_t>(base + (r + kRowsAhead) * stride * esize);
      for (uintptr_t line = a & ~uintptr_t(63); line < a + n * esize; line += 64)
        __builtin_prefetch(reinterpret_cast<const void*>(line), 0, 3);
    }
    load_row(src, type, offset + r * stride, n, dst + r * dst_ld);
  }
}

void store_row(const float* src, int64_t n, ElemType type, void* dst, int64_t offset) {
  if (type == ElemType::f32) {
    std::copy(src, src + n, static_cast<float*>(dst) + offset);
    return;
  }
  uint16_t* h = static_cast<uint16_t*>(dst) + offset;
  int64_t c = 0;
#if defined(__x86_64__)
  if (cpu_features().avx2) c = store_row_avx2(src, n, type, h);
#endif
  for (; c < n; ++c) h[c] = type == ElemType::f16 ? float_to_fp16_half_away(src[c]) : float_to_bf16_rne(src[c]);
}

}  // namespace ascend_attn_cpu
