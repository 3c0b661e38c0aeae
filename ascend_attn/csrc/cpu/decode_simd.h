// SIMD building blocks of the native kernels (first those of the decode side, IncreFlashAttention
// and RingAttentionUpdate; the FA row ops use the loads and the roundings too): one exp algorithm
// in a scalar and an AVX2 form that give the same bits, 8-wide loads/stores of fp32/fp16/bf16 rows
// and the fp16 / bf16 roundings of the spec. AVX2 functions carry target attributes (the library
// is built without -march); callers pick them at run time from cpu_features().avx2.
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <limits>

#include "common.h"

#if defined(__x86_64__)
#include <immintrin.h>
#define ASCEND_ATTN_AVX2 __attribute__((target("avx2,fma,f16c")))
#endif

namespace ascend_attn_cpu {

enum class ElemType : int { f32 = 0, f16 = 1, bf16 = 2, i8 = 3 };

// float32 -> float16 bits, round to nearest even (IEEE; what tensor.to(float16) does).
inline uint16_t float_to_fp16_rne(float f) {
  uint32_t u = float_to_bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520 rounds to inf
  int exp = static_cast<int>(a >> 23) - 127;
  if (exp >= -14) {
    uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
    return static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu));
  }
  if (exp < -25) return sign;
  uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  int shift = -exp - 1;
  uint32_t q = mant >> shift, rest = mant & ((1u << shift) - 1u), half = 1u << (shift - 1);
  if (rest > half || (rest == half && (q & 1u))) ++q;
  return static_cast<uint16_t>(sign | q);
}

// exp(x) in float32: Cody-Waite reduction by ln 2, degree-6 polynomial (Cephes expf coefficients),
// scaling by 2^n in two steps so that subnormal results round once more at most. Error about 1 ulp;
// exp(-inf) = 0, exp(+inf) = inf, NaN stays NaN. The scalar and AVX2 forms give identical bits.
constexpr float kExpLog2e = 1.44269504088896341f;
constexpr float kExpLn2Hi = 0.693359375f;
constexpr float kExpLn2Lo = -2.12194440e-4f;
constexpr float kExpP[6] = {1.9875691500e-4f, 1.3981999507e-3f, 8.3334519073e-3f,
                            4.1665795894e-2f, 1.6666665459e-1f, 5.0000001201e-1f};

inline float exp_poly(float x) {
  if (std::isnan(x)) return x;
  float xc = std::fmin(std::fmax(x, -104.0f), 89.0f);
  float n = std::nearbyint(xc * kExpLog2e);
  float r = std::fma(-n, kExpLn2Hi, xc);
  r = std::fma(-n, kExpLn2Lo, r);
  float p = kExpP[0];
  for (int i = 1; i < 6; ++i) p = std::fma(p, r, kExpP[i]);
  float r2 = r * r;
  float y = std::fma(p, r2, r) + 1.0f;
  int ni = static_cast<int>(n), n1 = ni >> 1, n2 = ni - n1;
  return y * bits_to_float(static_cast<uint32_t>(n1 + 127) << 23) *
         bits_to_float(static_cast<uint32_t>(n2 + 127) << 23);
}

#if defined(__x86_64__)
ASCEND_ATTN_AVX2 inline __m256 exp8(__m256 x) {
  __m256 xc = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-104.0f)), _mm256_set1_ps(89.0f));
  __m256 n = _mm256_round_ps(_mm256_mul_ps(xc, _mm256_set1_ps(kExpLog2e)),
                             _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpLn2Hi), xc);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(kExpLn2Lo), r);
  __m256 p = _mm256_set1_ps(kExpP[0]);
  for (int i = 1; i < 6; ++i) p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(kExpP[i]));
  __m256 r2 = _mm256_mul_ps(r, r);
  __m256 y = _mm256_add_ps(_mm256_fmadd_ps(p, r2, r), _mm256_set1_ps(1.0f));
  __m256i ni = _mm256_cvtps_epi32(n);
  __m256i n1 = _mm256_srai_epi32(ni, 1), n2 = _mm256_sub_epi32(ni, n1);
  __m256i bias = _mm256_set1_epi32(127);
  __m256 s1 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n1, bias), 23));
  __m256 s2 = _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_add_epi32(n2, bias), 23));
  y = _mm256_mul_ps(_mm256_mul_ps(y, s1), s2);
  return _mm256_blendv_ps(y, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));  // NaN passes through
}

// max that propagates NaN from either side (like torch.maximum); _mm256_max_ps alone does not.
ASCEND_ATTN_AVX2 inline __m256 max8_nan(__m256 a, __m256 b) {
  return _mm256_blendv_ps(_mm256_max_ps(a, b), _mm256_add_ps(a, b), _mm256_cmp_ps(a, b, _CMP_UNORD_Q));
}

ASCEND_ATTN_AVX2 inline float hsum8(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

ASCEND_ATTN_AVX2 inline __m256 load8_f16(const uint16_t* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}
ASCEND_ATTN_AVX2 inline __m256 load8_bf16(const uint16_t* p) {
  __m256i w = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
  return _mm256_castsi256_ps(_mm256_slli_epi32(w, 16));
}
ASCEND_ATTN_AVX2 inline __m256 load8_i8(const int8_t* p) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(p))));
}
ASCEND_ATTN_AVX2 inline void store8_f16_rne(uint16_t* p, __m256 v) {
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
}
// bf16 nearest-even on the float32 bits: add 0x7fff + lsb, clear the low half (NaN passes).
ASCEND_ATTN_AVX2 inline __m256 round8_bf16_even(__m256 x) {
  const __m256i u = _mm256_castps_si256(x);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  const __m256i r = _mm256_and_si256(_mm256_add_epi32(_mm256_add_epi32(u, _mm256_set1_epi32(0x7fff)), lsb),
                                     _mm256_set1_epi32(static_cast<int>(0xffff0000u)));
  const __m256 nan = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  return _mm256_blendv_ps(_mm256_castsi256_ps(r), x, nan);
}

// fp16 nearest, ties away from zero, kept as float32 (see float_to_fp16_half_away in common.h):
// normal range: add half of the dropped 13 bits and truncate; subnormal range: units of 2^-24,
// floor + (fraction >= 0.5) (exact); |x| >= 65520: inf; NaN passes.
ASCEND_ATTN_AVX2 inline __m256 round8_fp16_half_away(__m256 x) {
  const __m256 sign_mask = _mm256_castsi256_ps(_mm256_set1_epi32(static_cast<int>(0x80000000u)));
  const __m256 sign = _mm256_and_ps(x, sign_mask);
  const __m256 a = _mm256_andnot_ps(sign_mask, x);
  const __m256i ai = _mm256_castps_si256(a);
  const __m256 normal = _mm256_castsi256_ps(_mm256_and_si256(_mm256_add_epi32(ai, _mm256_set1_epi32(0x1000)),
                                                              _mm256_set1_epi32(static_cast<int>(0xffffe000u))));
  const __m256 units = _mm256_mul_ps(a, _mm256_set1_ps(16777216.f));  // a * 2^24, exact
  const __m256 whole = _mm256_floor_ps(units);
  const __m256 up = _mm256_and_ps(_mm256_cmp_ps(_mm256_sub_ps(units, whole), _mm256_set1_ps(0.5f), _CMP_GE_OQ),
                                  _mm256_set1_ps(1.f));
  const __m256 sub = _mm256_mul_ps(_mm256_add_ps(whole, up), _mm256_set1_ps(5.9604644775390625e-8f));
  __m256 r = _mm256_blendv_ps(sub, normal, _mm256_cmp_ps(a, _mm256_set1_ps(6.103515625e-05f), _CMP_GE_OQ));
  r = _mm256_blendv_ps(r, _mm256_set1_ps(std::numeric_limits<float>::infinity()),
                       _mm256_cmp_ps(a, _mm256_set1_ps(65520.f), _CMP_GE_OQ));
  r = _mm256_or_ps(r, sign);
  return _mm256_blendv_ps(r, x, _mm256_cmp_ps(x, x, _CMP_UNORD_Q));
}

ASCEND_ATTN_AVX2 inline void store8_f16_half_away(uint16_t* p, __m256 v) {
  store8_f16_rne(p, round8_fp16_half_away(v));  // on the fp16 grid already: the conversion is exact
}
// bf16 RNE with NaN kept quiet (same rule as float_to_bf16_rne): the 8 bf16 bit patterns in the
// low halves of 32-bit lanes.
ASCEND_ATTN_AVX2 inline __m256i bf16_rne_bits8(__m256 v) {
  __m256i u = _mm256_castps_si256(v);
  __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(u, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_add_epi32(u, _mm256_add_epi32(_mm256_set1_epi32(0x7fff), lsb));
  __m256i nan = _mm256_or_si256(u, _mm256_set1_epi32(0x400000));
  r = _mm256_castps_si256(_mm256_blendv_ps(_mm256_castsi256_ps(r), _mm256_castsi256_ps(nan),
                                           _mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  return _mm256_srli_epi32(r, 16);
}
ASCEND_ATTN_AVX2 inline void store8_bf16_rne(uint16_t* p, __m256 v) {
  const __m256i r = bf16_rne_bits8(v);
  __m128i packed = _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(p), packed);
}
#endif

}  // namespace ascend_attn_cpu
