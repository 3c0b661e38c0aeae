// RingAttentionUpdate, native CPU kernel (semantics.md §1): one fused pass over the rows.
//
// Per query row and lane, in float32:
//   m = max(pm, cm); sp = ps * exp(pm - m); sc = cs * exp(cm - m); s = sp + sc
//   out = fp32(prev) * (sp / s) + fp32(cur) * (sc / s)     -> RNE into the attention dtype
// m and s per lane (the 8 lanes are one AVX2 vector); the attention weights use lane 0.
//
// Every layout is a list of segments of (row r, head h) pairs: the statistics row of (r, h) is
// stats_base + h*head_stride + r*row_stride (in rows of 8 floats), the attention row is
// attn_base + (r*heads + h)*D. SBH: one segment (rows S, heads B*N, stats [B,N,S,8]); TND with
// TND statistics: one segment (rows T, heads N); TND with NTD statistics: one segment per
// sequence (its [N, S_b, 8] block). A work unit is a tile of rows of one segment: first the
// statistics of all its (r, h) (contiguous runs per head), then its attention rows in memory order.
// Framework-neutral core below; the ATen binding is at the bottom.
// The spec's formulas round every product and sum separately (e.g. RAU's "two products, one add");
// GNU C++ would fuse a*b + c into one FMA wherever FMA is enabled (the AVX2 code), so contraction is
// off for the kernels of this file: explicit fused multiply-adds only.
#pragma GCC optimize("fp-contract=off")
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "common.h"
#include "decode_simd.h"
#include "fresh_tensor.h"

namespace ascend_attn_cpu {
namespace rau {

struct Segment {
  int64_t rows, heads, stats_base, head_stride, row_stride, attn_base;
};

struct Plan {
  ElemType dtype = ElemType::f32;
  int64_t head_dim = 0;
  std::vector<Segment> segments;
  std::vector<int64_t> unit_start;  // first work unit of each segment, plus the total at the end
  const void* prev_attn = nullptr;
  const void* cur_attn = nullptr;
  void* out_attn = nullptr;
  const float *prev_max = nullptr, *prev_sum = nullptr, *cur_max = nullptr, *cur_sum = nullptr;
  float *new_max = nullptr, *new_sum = nullptr;
};

// Rows per work unit. Statistics rows are 32 bytes, so a unit reads 4 KiB runs of each head's
// statistics: with [B, N, S, 8] statistics (SBH) the heads of a row are S * 32 bytes apart, and
// 16-row units (512-byte runs) touched every page eight times over, one TLB miss per run. SBH
// fp32 S=4096, B=4, N=8, D=128 went from 1.68x a copy of its inputs to the ratio of the same-size
// TND case (one thread, Zen 3).
constexpr int64_t kTileRows = 128;

void finish_plan(Plan& p) {
  p.unit_start.assign(1, 0);
  for (const Segment& s : p.segments)
    p.unit_start.push_back(p.unit_start.back() + (s.rows + kTileRows - 1) / kTileRows);
}

// ------------------------------------------------------------------ statistics of one row
inline void merge_stats_scalar(const Plan& p, int64_t row, float* wp, float* wc) {
  const int64_t o = row * 8;
  for (int lane = 7; lane >= 0; --lane) {
    float pm = p.prev_max[o + lane], cm = p.cur_max[o + lane];
    float m = (std::isnan(pm) || std::isnan(cm)) ? pm + cm : std::max(pm, cm);
    float sp = p.prev_sum[o + lane] * exp_poly(pm - m);
    float sc = p.cur_sum[o + lane] * exp_poly(cm - m);
    float s = sp + sc;
    p.new_max[o + lane] = m;
    p.new_sum[o + lane] = s;
    if (lane == 0) { *wp = sp / s; *wc = sc / s; }
  }
}

#if defined(__x86_64__)
ASCEND_ATTN_AVX2 inline void merge_stats_avx2(const Plan& p, int64_t row, float* wp, float* wc) {
  const int64_t o = row * 8;
  __m256 pm = _mm256_loadu_ps(p.prev_max + o), cm = _mm256_loadu_ps(p.cur_max + o);
  __m256 m = max8_nan(pm, cm);
  __m256 sp = _mm256_mul_ps(_mm256_loadu_ps(p.prev_sum + o), exp8(_mm256_sub_ps(pm, m)));
  __m256 sc = _mm256_mul_ps(_mm256_loadu_ps(p.cur_sum + o), exp8(_mm256_sub_ps(cm, m)));
  __m256 s = _mm256_add_ps(sp, sc);
  const bool aligned = (reinterpret_cast<uintptr_t>(p.new_max + o) & 31) == 0 &&
                       (reinterpret_cast<uintptr_t>(p.new_sum + o) & 31) == 0;
  if (aligned) {
    _mm256_stream_ps(p.new_max + o, m);  // write-only outputs: no read of their lines first
    _mm256_stream_ps(p.new_sum + o, s);
  } else {
    _mm256_storeu_ps(p.new_max + o, m);
    _mm256_storeu_ps(p.new_sum + o, s);
  }
  *wp = _mm256_cvtss_f32(_mm256_div_ps(sp, s));
  *wc = _mm256_cvtss_f32(_mm256_div_ps(sc, s));
}
#endif

// ------------------------------------------------------------------ blending one attention row
inline float load_scalar(ElemType t, const void* base, int64_t i) {
  switch (t) {
    case ElemType::f16: return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
    case ElemType::bf16: return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
    default: return static_cast<const float*>(base)[i];
  }
}

inline void store_scalar(ElemType t, void* base, int64_t i, float v) {
  switch (t) {
    case ElemType::f16: static_cast<uint16_t*>(base)[i] = float_to_fp16_rne(v); break;
    case ElemType::bf16: static_cast<uint16_t*>(base)[i] = float_to_bf16_rne(v); break;
    default: static_cast<float*>(base)[i] = v;
  }
}

// out = prev*wp + cur*wc: two rounded products and one add (no FMA: the spec's formula).
inline void blend_scalar(const Plan& p, int64_t e0, int64_t n, float wp, float wc) {
  for (int64_t i = e0; i < e0 + n; ++i) {
    float a = load_scalar(p.dtype, p.prev_attn, i) * wp;
    float b = load_scalar(p.dtype, p.cur_attn, i) * wc;
    store_scalar(p.dtype, p.out_attn, i, a + b);
  }
}

#if defined(__x86_64__)
template <ElemType T>
ASCEND_ATTN_AVX2 inline __m256 load8(const void* base, int64_t i) {
  if constexpr (T == ElemType::f16) return load8_f16(static_cast<const uint16_t*>(base) + i);
  else if constexpr (T == ElemType::bf16) return load8_bf16(static_cast<const uint16_t*>(base) + i);
  else return _mm256_loadu_ps(static_cast<const float*>(base) + i);
}

// 16 outputs rounded into the attention dtype, written with one 32-byte store: streaming (the
// output is write-only here, a non-temporal store skips reading its lines first) when aligned.
template <ElemType T>
ASCEND_ATTN_AVX2 inline __m256i pack16(__m256 lo, __m256 hi) {
  if constexpr (T == ElemType::f16) {
    const int rne = _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC;
    return _mm256_set_m128i(_mm256_cvtps_ph(hi, rne), _mm256_cvtps_ph(lo, rne));
  } else {  // bf16 RNE with NaN kept quiet
    // packus interleaves the 128-bit lanes: [lo0-3, hi0-3, lo4-7, hi4-7] -> reorder the 64-bit quarters
    return _mm256_permute4x64_epi64(_mm256_packus_epi32(bf16_rne_bits8(lo), bf16_rne_bits8(hi)),
                                    _MM_SHUFFLE(3, 1, 2, 0));
  }
}

template <ElemType T>
ASCEND_ATTN_AVX2 void blend_avx2(const Plan& p, int64_t e0, int64_t n, float wp, float wc) {
  const __m256 vp = _mm256_set1_ps(wp), vc = _mm256_set1_ps(wc);
  int64_t i = 0;
  if constexpr (T == ElemType::f32) {
    float* out = static_cast<float*>(p.out_attn) + e0;
    const bool stream = (reinterpret_cast<uintptr_t>(out) & 31) == 0;
    for (; i + 8 <= n; i += 8) {
      __m256 a = _mm256_mul_ps(load8<T>(p.prev_attn, e0 + i), vp);
      __m256 b = _mm256_mul_ps(load8<T>(p.cur_attn, e0 + i), vc);
      if (stream) _mm256_stream_ps(out + i, _mm256_add_ps(a, b));
      else _mm256_storeu_ps(out + i, _mm256_add_ps(a, b));
    }
  } else {
    uint16_t* out = static_cast<uint16_t*>(p.out_attn) + e0;
    const bool stream = (reinterpret_cast<uintptr_t>(out) & 31) == 0;
    for (; i + 16 <= n; i += 16) {
      __m256 lo = _mm256_add_ps(_mm256_mul_ps(load8<T>(p.prev_attn, e0 + i), vp),
                                _mm256_mul_ps(load8<T>(p.cur_attn, e0 + i), vc));
      __m256 hi = _mm256_add_ps(_mm256_mul_ps(load8<T>(p.prev_attn, e0 + i + 8), vp),
                                _mm256_mul_ps(load8<T>(p.cur_attn, e0 + i + 8), vc));
      __m256i packed = pack16<T>(lo, hi);
      if (stream) _mm256_stream_si256(reinterpret_cast<__m256i*>(out + i), packed);
      else _mm256_storeu_si256(reinterpret_cast<__m256i*>(out + i), packed);
    }
  }
  if (i < n) blend_scalar(p, e0 + i, n - i, wp, wc);
}
#endif

// ------------------------------------------------------------------ one tile of one segment
template <bool Avx2>
void process_units(const Plan& p, int64_t u0, int64_t u1) {
  std::vector<float> weights;
  const int64_t d = p.head_dim;
  for (int64_t u = u0; u < u1; ++u) {
    size_t si = std::upper_bound(p.unit_start.begin(), p.unit_start.end(), u) - p.unit_start.begin() - 1;
    const Segment& seg = p.segments[si];
    const int64_t r0 = (u - p.unit_start[si]) * kTileRows, r1 = std::min(seg.rows, r0 + kTileRows);
    weights.resize(static_cast<size_t>(2 * (r1 - r0) * seg.heads));
    for (int64_t h = 0; h < seg.heads; ++h) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t row = seg.stats_base + h * seg.head_stride + r * seg.row_stride;
        float* w = &weights[2 * ((r - r0) * seg.heads + h)];
#if defined(__x86_64__)
        if constexpr (Avx2) { merge_stats_avx2(p, row, w, w + 1); continue; }
#endif
        merge_stats_scalar(p, row, w, w + 1);
      }
    }
    for (int64_t r = r0; r < r1; ++r) {
      for (int64_t h = 0; h < seg.heads; ++h) {
        const float* w = &weights[2 * ((r - r0) * seg.heads + h)];
        const int64_t e0 = seg.attn_base + (r * seg.heads + h) * d;
#if defined(__x86_64__)
        if constexpr (Avx2) {
          switch (p.dtype) {
            case ElemType::f16: blend_avx2<ElemType::f16>(p, e0, d, w[0], w[1]); break;
            case ElemType::bf16: blend_avx2<ElemType::bf16>(p, e0, d, w[0], w[1]); break;
            default: blend_avx2<ElemType::f32>(p, e0, d, w[0], w[1]);
          }
          continue;
        }
#endif
        blend_scalar(p, e0, d, w[0], w[1]);
      }
    }
  }
}

void process(const Plan& p, int64_t u0, int64_t u1) {
#if defined(__x86_64__)
  if (cpu_features().avx2) {
    process_units<true>(p, u0, u1);
    _mm_sfence();  // the streaming stores are visible before the caller reads the outputs
    return;
  }
#endif
  process_units<false>(p, u0, u1);
}

// ------------------------------------------------------------------ ATen binding
ElemType elem_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return ElemType::f16;
    case at::kBFloat16: return ElemType::bf16;
    case at::kFloat: return ElemType::f32;
    default: TORCH_CHECK(false, "ring_attention_update: unsupported attention dtype ", t.scalar_type());
  }
}

// Inputs validated by ascend_attn.validation.check_ring_attention_update (the Python op).
// layout "SBH" | "TND"; stats_layout "BNS" | "NTD" | "TND"; seq_offsets: cumulative, leading 0 (NTD).
std::tuple<at::Tensor, at::Tensor, at::Tensor> ring_attention_update_op(
    const at::Tensor& prev_attn_out, const at::Tensor& prev_softmax_max, const at::Tensor& prev_softmax_sum,
    const at::Tensor& cur_attn_out, const at::Tensor& cur_softmax_max, const at::Tensor& cur_softmax_sum,
    c10::string_view layout, c10::string_view stats_layout, int64_t num_heads, int64_t head_dim,
    at::IntArrayRef seq_offsets) {
  const at::Tensor prev = prev_attn_out.contiguous(), cur = cur_attn_out.contiguous();
  const at::Tensor pm = prev_softmax_max.contiguous(), ps = prev_softmax_sum.contiguous();
  const at::Tensor cm = cur_softmax_max.contiguous(), cs = cur_softmax_sum.contiguous();
  at::Tensor out = fresh_tensor(prev.sizes(), prev.options());
  at::Tensor new_max = fresh_tensor(pm.sizes(), pm.options().dtype(at::kFloat));
  at::Tensor new_sum = fresh_tensor(pm.sizes(), pm.options().dtype(at::kFloat));
  Plan p;
  p.dtype = elem_type(prev);
  p.head_dim = head_dim;
  p.prev_attn = prev.data_ptr();
  p.cur_attn = cur.data_ptr();
  p.out_attn = out.data_ptr();
  p.prev_max = pm.data_ptr<float>();
  p.prev_sum = ps.data_ptr<float>();
  p.cur_max = cm.data_ptr<float>();
  p.cur_sum = cs.data_ptr<float>();
  p.new_max = new_max.data_ptr<float>();
  p.new_sum = new_sum.data_ptr<float>();
  if (layout == "SBH") {
    const int64_t s = prev.size(0), heads = prev.size(1) * num_heads;
    p.segments.push_back({s, heads, 0, s, 1, 0});
  } else if (stats_layout == "TND") {
    p.segments.push_back({prev.size(0), num_heads, 0, 1, num_heads, 0});
  } else {
    for (size_t b = 0; b + 1 < seq_offsets.size(); ++b) {
      const int64_t off = seq_offsets[b], len = seq_offsets[b + 1] - off;
      if (len > 0) p.segments.push_back({len, num_heads, off * num_heads, len, 1, off * num_heads * head_dim});
    }
  }
  finish_plan(p);
  at::parallel_for(0, p.unit_start.back(), 1, [&](int64_t u0, int64_t u1) { process(p, u0, u1); });
  return {out, new_max, new_sum};
}

}  // namespace rau
}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def("ring_attention_update(Tensor prev_attn_out, Tensor prev_softmax_max, Tensor prev_softmax_sum, "
        "Tensor cur_attn_out, Tensor cur_softmax_max, Tensor cur_softmax_sum, str layout, str stats_layout, "
        "int num_heads, int head_dim, int[] seq_offsets) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(ascend_attn_cpu, CPU, m) {
  m.impl("ring_attention_update", &ascend_attn_cpu::rau::ring_attention_update_op);
}
