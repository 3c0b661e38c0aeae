// IncreFlashAttention native CPU kernel: the plan (framework-neutral: plain pointers, strides,
// per-batch ranges) shared by the ISA-specific bodies (incre_flash_attention_body.h) and the
// ATen binding (incre_flash_attention.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "decode_simd.h"

namespace ascend_attn_cpu {
namespace ifa {

// KV positions of one work item: the item's scores ([G, kChunk] fp32) stay in L2, and the split is a
// function of the shape only, so results do not depend on the thread count.
constexpr int64_t kChunk = 1024;

struct Plan {
  int64_t batch = 0, heads_q = 0, heads_kv = 0, group = 0, head_dim = 0;
  int64_t heads_per_unit = 1;  // KV heads of one work unit (1 or heads_kv)
  ElemType q_type = ElemType::f32, kv_type = ElemType::f32, out_type = ElemType::f32;
  float scale = 1.0f;
  const void* query = nullptr;  // (B, Nq, D) contiguous in every layout (S = 1)
  void* out = nullptr;          // same indexing as query

  // K/V row (batch b, kv head g, position t) at element offset
  //   paged:     table[b*table_stride + t / block_size]*page_stride + (t % block_size)*t_stride + g*g_stride
  //   otherwise: t*t_stride[b] + g*g_stride[b]           from k_base[b] / v_base[b]
  std::vector<const void*> k_base, v_base;
  std::vector<int64_t> t_stride, g_stride;
  bool paged = false;
  const int32_t* block_table = nullptr;
  int64_t table_stride = 0, block_size = 0, page_stride = 0;
  std::vector<int64_t> starts, ends;  // valid positions [start_b, end_b); start_b < 0: empty

  // atten_mask (1 byte per position, nonzero = masked): row b*mask_b + h*mask_h (h = query head)
  const uint8_t* mask = nullptr;
  int64_t mask_b = 0, mask_h = 0;
  // pse_shift (query dtype; fp16 for an int8 query): row b*pse_b + h*pse_h
  const void* pse = nullptr;
  ElemType pse_type = ElemType::f32;
  int64_t pse_b = 0, pse_h = 0;

  // antiquant (float32) of the key (aq_*) and the value (av_*): Nkv*D values per channel or one
  const float* aq_scale = nullptr;
  const float* aq_offset = nullptr;
  const float* av_scale = nullptr;
  const float* av_offset = nullptr;
  bool aq_channel = false;

  // output quantization quant2: 0 none, 1 per tensor (fp16 arithmetic), 2 per channel (Nq*D, fp32)
  int quant = 0;
  const float* q2_scale = nullptr;
  const float* q2_offset = nullptr;

  // full int8 (scenarios A/B): FP19 dequant values and quant_scale1
  bool full_int8 = false;
  float deq1 = 0.0f, deq2 = 0.0f, qs1 = 0.0f;
};

// One work item: KV head g of batch b over positions [c0, c1).
struct Item {
  int64_t b, g, c0, c1;
};

// Partial result of one item, per query head of the group: the row maximum of the kept scores,
// the sum of exp (unrounded), the sum of the rounded P (value offset term), the count of kept
// positions, and the unnormalised P.V.
struct PartialView {
  float* m;
  float* l;
  float* psum;
  float* kept;
  float* acc;  // [G, D]
};

template <ElemType T>
inline float load_elem(const void* base, int64_t i) {
  if constexpr (T == ElemType::f16) return fp16_to_float(static_cast<const uint16_t*>(base)[i]);
  else if constexpr (T == ElemType::bf16) return bf16_to_float(static_cast<const uint16_t*>(base)[i]);
  else if constexpr (T == ElemType::i8) return static_cast<float>(static_cast<const int8_t*>(base)[i]);
  else return static_cast<const float*>(base)[i];
}

inline float load_elem_rt(ElemType t, const void* base, int64_t i) {
  switch (t) {
    case ElemType::f16: return load_elem<ElemType::f16>(base, i);
    case ElemType::bf16: return load_elem<ElemType::bf16>(base, i);
    case ElemType::i8: return load_elem<ElemType::i8>(base, i);
    default: return load_elem<ElemType::f32>(base, i);
  }
}

inline int64_t elem_size(ElemType t) {
  return t == ElemType::f32 ? 4 : t == ElemType::i8 ? 1 : 2;
}

// float64 -> float16 bits, round to nearest even in one step (going through float32 could round
// twice); used for the exact fp16 sum of two fp16 values (sh + pse in scenarios A/B).
inline uint16_t fp16_rne_bits_of_double(double x) {
  if (std::isnan(x)) return float_to_fp16_rne(static_cast<float>(x));
  const uint16_t sign = std::signbit(x) ? 0x8000u : 0u;
  const double a = std::fabs(x);
  if (a >= 65520.0) return static_cast<uint16_t>(sign | 0x7c00u);
  const uint16_t h = float_to_fp16_rne(static_cast<float>(a));
  uint16_t lo = h, hi = static_cast<uint16_t>(h + 1);
  if (static_cast<double>(fp16_to_float(h)) > a) { hi = h; lo = static_cast<uint16_t>(h - 1); }
  const double dl = a - fp16_to_float(lo), dh = static_cast<double>(fp16_to_float(hi)) - a;
  const uint16_t r = dl < dh ? lo : dh < dl ? hi : ((lo & 1u) ? hi : lo);
  return static_cast<uint16_t>(sign | r);
}
inline float fp16_rne_of_double(double x) { return fp16_to_float(fp16_rne_bits_of_double(x)); }

// Start of the D elements of K (key = true) or V row t of KV head g of batch b, read in place.
inline const void* kv_row(const Plan& p, bool key, int64_t b, int64_t g, int64_t t) {
  const char* base = static_cast<const char*>(key ? p.k_base[b] : p.v_base[b]);
  int64_t off;
  if (p.paged) {
    const int64_t page = p.block_table[b * p.table_stride + t / p.block_size];
    off = page * p.page_stride + (t % p.block_size) * p.t_stride[b] + g * p.g_stride[b];
  } else {
    off = t * p.t_stride[b] + g * p.g_stride[b];
  }
  return base + off * elem_size(p.kv_type);
}

}  // namespace ifa
}  // namespace ascend_attn_cpu
