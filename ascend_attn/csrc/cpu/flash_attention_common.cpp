// FlashAttention CPU core, shared pieces: per-row vector primitives (AVX2+FMA or scalar, chosen at
// run time).
#include "flash_attention.h"

namespace ascend_attn_cpu {
namespace fa {

// ----------------------------------------------------------------------------- scalar row ops
namespace {

// Row max that propagates NaN (std::max and vmaxps drop it): a NaN score must reach the output,
// as in torch's SDPA and the eager kernel.
float max_scalar(const float* x, int64_t n) {
  float m = -std::numeric_limits<float>::infinity();
  for (int64_t c = 0; c < n; ++c) {
    if (std::isnan(x[c])) return x[c];
    m = std::max(m, x[c]);
  }
  return m;
}

float exp_sum_scalar(float* x, int64_t n, float m) {
  float sum = 0.f;
  for (int64_t c = 0; c < n; ++c) sum += (x[c] = std::exp(x[c] - m));
  return sum;
}

void exp_div_scalar(float* x, int64_t n, float m, float l) {
  for (int64_t c = 0; c < n; ++c) x[c] = std::exp(x[c] - m) / l;
}

void scale_scalar(float* x, int64_t n, float a) {
  for (int64_t c = 0; c < n; ++c) x[c] *= a;
}

void round_scalar_row(float* x, int64_t n, Round mode) {
  if (mode == Round::kNone) return;
  for (int64_t c = 0; c < n; ++c) x[c] = round_scalar(x[c], mode);
}

float dot_scalar(const float* a, const float* b, int64_t n) {
  float s = 0.f;
  for (int64_t c = 0; c < n; ++c) s += a[c] * b[c];
  return s;
}

constexpr RowOps kScalarOps{max_scalar, exp_sum_scalar, exp_div_scalar, scale_scalar, round_scalar_row, dot_scalar};

// ----------------------------------------------------------------------------- AVX2 + FMA row ops
#if defined(__x86_64__)
#define AVX2_FN ASCEND_ATTN_AVX2  // the target of decode_simd.h's helpers, so that they inline here

AVX2_FN inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

AVX2_FN inline float hmax(__m256 v) {
  __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_max_ps(s, _mm_movehl_ps(s, s));
  s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}

// exp(x), float32, about 1 ulp (Cephes expf polynomial after x = n ln2 + r); inputs below the
// normal range (incl. -inf: masked scores) give exactly 0; NaN stays NaN (the clamp would hide it).
AVX2_FN inline __m256 exp256(__m256 x) {
  const __m256 hi = _mm256_set1_ps(88.3762626647949f), lo = _mm256_set1_ps(-87.3365447505531f);
  const __m256 underflow = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  const __m256 nan_in = _mm256_cmp_ps(x, x, _CMP_UNORD_Q);
  const __m256 x_in = x;
  x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500e-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.f)));
  const __m256i pow2 = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(pow2));
  return _mm256_blendv_ps(_mm256_andnot_ps(underflow, y), x_in, nan_in);
}

AVX2_FN float max_avx2(const float* x, int64_t n) {
  __m256 m = _mm256_set1_ps(-std::numeric_limits<float>::infinity());
  __m256 nan = _mm256_setzero_ps();  // lanes that met a NaN: vmaxps would drop it
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    const __m256 v = _mm256_loadu_ps(x + c);
    nan = _mm256_or_ps(nan, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
    m = _mm256_max_ps(m, v);
  }
  if (_mm256_movemask_ps(nan)) return std::numeric_limits<float>::quiet_NaN();
  float r = hmax(m);
  for (; c < n; ++c) {
    if (std::isnan(x[c])) return x[c];
    r = std::max(r, x[c]);
  }
  return r;
}

AVX2_FN float exp_sum_avx2(float* x, int64_t n, float m) {
  const __m256 vm = _mm256_set1_ps(m);
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) {
    __m256 e = exp256(_mm256_sub_ps(_mm256_loadu_ps(x + c), vm));
    _mm256_storeu_ps(x + c, e);
    acc = _mm256_add_ps(acc, e);
  }
  if (c < n) {  // tail through the same exp: one numerical path for every column
    alignas(32) float buf[8];
    const int64_t rest = n - c;
    for (int k = 0; k < 8; ++k) buf[k] = k < rest ? x[c + k] - m : -std::numeric_limits<float>::infinity();
    __m256 e = exp256(_mm256_load_ps(buf));
    _mm256_store_ps(buf, e);
    acc = _mm256_add_ps(acc, e);
    for (int64_t k = 0; k < rest; ++k) x[c + k] = buf[k];
  }
  return hsum(acc);
}

AVX2_FN void exp_div_avx2(float* x, int64_t n, float m, float l) {
  const __m256 vm = _mm256_set1_ps(m), vl = _mm256_set1_ps(l);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8)
    _mm256_storeu_ps(x + c, _mm256_div_ps(exp256(_mm256_sub_ps(_mm256_loadu_ps(x + c), vm)), vl));
  if (c < n) {
    alignas(32) float buf[8];
    const int64_t rest = n - c;
    for (int k = 0; k < 8; ++k) buf[k] = k < rest ? x[c + k] - m : 0.f;
    _mm256_store_ps(buf, _mm256_div_ps(exp256(_mm256_load_ps(buf)), vl));
    for (int64_t k = 0; k < rest; ++k) x[c + k] = buf[k];
  }
}

AVX2_FN void scale_avx2(float* x, int64_t n, float a) {
  const __m256 va = _mm256_set1_ps(a);
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) _mm256_storeu_ps(x + c, _mm256_mul_ps(_mm256_loadu_ps(x + c), va));
  for (; c < n; ++c) x[c] *= a;
}

AVX2_FN void round_avx2(float* x, int64_t n, Round mode) {
  if (mode == Round::kNone) return;
  int64_t c = 0;
  if (mode == Round::kBf16Even) {
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(x + c, round8_bf16_even(_mm256_loadu_ps(x + c)));
  } else {
    for (; c + 8 <= n; c += 8) _mm256_storeu_ps(x + c, round8_fp16_half_away(_mm256_loadu_ps(x + c)));
  }
  for (; c < n; ++c) x[c] = round_scalar(x[c], mode);
}

AVX2_FN float dot_avx2(const float* a, const float* b, int64_t n) {
  __m256 acc = _mm256_setzero_ps();
  int64_t c = 0;
  for (; c + 8 <= n; c += 8) acc = _mm256_fmadd_ps(_mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c), acc);
  float s = hsum(acc);
  for (; c < n; ++c) s += a[c] * b[c];
  return s;
}

constexpr RowOps kAvx2Ops{max_avx2, exp_sum_avx2, exp_div_avx2, scale_avx2, round_avx2, dot_avx2};
#endif

bool use_avx2() {
  return cpu_features().avx2;
}

}  // namespace

const RowOps& row_ops() {
#if defined(__x86_64__)
  static const RowOps& ops = use_avx2() ? kAvx2Ops : kScalarOps;
#else
  static const RowOps& ops = kScalarOps;
#endif
  return ops;
}

const char* row_ops_name() {
#if defined(__x86_64__)
  return use_avx2() ? "avx2" : "scalar";
#else
  return "scalar";
#endif
}

}  // namespace fa
}  // namespace ascend_attn_cpu
