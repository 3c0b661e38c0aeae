// IncreFlashAttention, native CPU kernel (semantics.md §7): decode at the speed of one read of the
// KV cache.
//
// Init: the plan (incre_flash_attention.h) holds pointers and strides; K/V are read in place
// (contiguous, tensor list or pages through the block table), int8 rows are converted in
// registers. Work items are (batch, KV head, chunk of kChunk positions): the G query heads of the
// group share every K and V row read. Process: each item computes its scores, its softmax pieces
// relative to its own maximum and its unnormalised P.V (flash-decoding partials). CopyOut: per
// (batch, KV head) the partials are merged in chunk order, normalised, rounded or quantised.
// The chunking depends on the shape only and every sum runs in a fixed order, so the result is
// bit-identical for any thread count.
// The spec's formulas round every product and sum separately (e.g. RAU's "two products, one add");
// GNU C++ would fuse a*b + c into one FMA wherever FMA is enabled (the AVX2 code), so contraction is
// off for the kernels of this file: explicit fused multiply-adds only.
#pragma GCC optimize("fp-contract=off")
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

#include "common.h"
#include "decode_simd.h"
#include "incre_flash_attention.h"
#include "row_convert.h"

namespace ascend_attn_cpu {
namespace ifa {

namespace isa_scalar {
#define IFA_BODY_AVX2 0
#include "incre_flash_attention_body.h"
#undef IFA_BODY_AVX2
}  // namespace isa_scalar

#if defined(__x86_64__)
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace isa_avx2 {
#define IFA_BODY_AVX2 1
#include "incre_flash_attention_body.h"
#undef IFA_BODY_AVX2
}  // namespace isa_avx2
#pragma GCC pop_options
#endif

// ------------------------------------------------------------------ output rounding / quant2 (§0.5, §7.6)
inline int8_t int8_sat(float x) {
  if (std::isnan(x)) return 0;
  return static_cast<int8_t>(std::min(127.0f, std::max(-128.0f, x)));
}

inline float fp16_rne_value(float x) { return fp16_to_float(float_to_fp16_rne(x)); }

// Writes row (b, h) of the output from o[D] (float32, already normalised).
void write_row(const Plan& p, int64_t b, int64_t h, const float* o) {
  const int64_t d = p.head_dim, base = (b * p.heads_q + h) * d;
  switch (p.out_type) {
    case ElemType::i8: {
      int8_t* out = static_cast<int8_t*>(p.out) + base;
      if (p.quant == 1) {  // per tensor: AscendQuant in fp16 arithmetic, half-even
        const float sc = fp16_rne_value(p.q2_scale[0]);
        for (int64_t e = 0; e < d; ++e) {
          float y = fp16_rne_value(fp16_rne_value(o[e]) * sc);
          if (p.q2_offset) y = fp16_rne_value(y + fp16_rne_value(p.q2_offset[0]));
          out[e] = int8_sat(std::nearbyint(y));
        }
      } else {  // per channel c = h*D + e: fp32 arithmetic, HALF_AWAY16 then round half away
        for (int64_t e = 0; e < d; ++e) {
          const int64_t c = h * d + e;
          float y = o[e] * p.q2_scale[c];
          if (p.q2_offset) y = y + p.q2_offset[c];
          float y16 = fp16_to_float(float_to_fp16_half_away(y));
          float r = std::isnan(y16) ? y16 : std::copysign(std::floor(std::fabs(y16) + 0.5f), y16);
          out[e] = int8_sat(r);
        }
      }
      return;
    }
    default:  // fp32, fp16 (ties away), bf16 (nearest even)
      return store_row(o, d, p.out_type, p.out, base);
  }
}

// ------------------------------------------------------------------ the whole op
struct Partials {
  int64_t stride;  // floats per item: G*(4 + D)
  std::vector<float> data;
  PartialView view(const Plan& p, int64_t i) {
    float* base = data.data() + i * stride;
    const int64_t g = p.group;
    return {base, base + g, base + 2 * g, base + 3 * g, base + 4 * g};
  }
};

// Merge the items of (b, KV head) in chunk order (items first, first + step, ...) and write the
// G output rows.
void combine(const Plan& p, Partials& parts, int64_t b, int64_t kvh, int64_t first, int64_t count, int64_t step) {
  const int64_t g = p.group, d = p.head_dim;
  std::vector<float> acc(static_cast<size_t>(d));
  for (int64_t j = 0; j < g; ++j) {
    const int64_t h = kvh * g + j;
    float kept = 0.0f, m = -INFINITY;
    for (int64_t c = 0; c < count; ++c) {
      PartialView v = parts.view(p, first + c * step);
      kept += v.kept[j];
      if (v.m[j] != -INFINITY) m = (std::isnan(m) || std::isnan(v.m[j])) ? m + v.m[j] : std::max(m, v.m[j]);
    }
    std::fill(acc.begin(), acc.end(), 0.0f);
    if (kept == 0.0f || m == -INFINITY) {  // nothing kept by lengths/mask: 0 / quant2(0) (§9f)
      write_row(p, b, h, acc.data());
      continue;
    }
    float l = 0.0f, psum = 0.0f;
    for (int64_t c = 0; c < count; ++c) {
      PartialView v = parts.view(p, first + c * step);
      if (v.m[j] == -INFINITY) continue;
      const float alpha = exp_poly(v.m[j] - m);
      l += v.l[j] * alpha;
      psum += v.psum[j] * alpha;
      const float* a = v.acc + j * d;
      for (int64_t e = 0; e < d; ++e) acc[e] += a[e] * alpha;
    }
    if (p.av_scale) {  // value antiquant: sum_j p_j v_j = sv * (sum_j p_j v8_j + ov * sum_j p_j)
      for (int64_t e = 0; e < d; ++e) {
        const int64_t c = p.aq_channel ? kvh * d + e : 0;
        float x = acc[e];
        if (p.av_offset) x += p.av_offset[c] * psum;
        acc[e] = x * p.av_scale[c];
      }
    }
    for (int64_t e = 0; e < d; ++e) acc[e] = acc[e] / l;
    write_row(p, b, h, acc.data());
  }
}

// Scenarios A/B: the G output rows of (b, KV head) from the exact integer partials:
// o = fp32(sum oi) * deq2 / fp32(sum l) (both sums exact in double).
void combine_int8(const Plan& p, Partials& parts, const double* l_parts, int64_t b, int64_t kvh, int64_t first,
                  int64_t count, int64_t step) {
  const int64_t g = p.group, d = p.head_dim;
  std::vector<double> oi(static_cast<size_t>(d));
  std::vector<float> o(static_cast<size_t>(d));
  for (int64_t j = 0; j < g; ++j) {
    const int64_t h = kvh * g + j;
    float kept = 0.0f;
    double l = 0.0;
    std::fill(oi.begin(), oi.end(), 0.0);
    for (int64_t c = 0; c < count; ++c) {
      const int64_t i = first + c * step;
      PartialView v = parts.view(p, i);
      kept += v.kept[j];
      l += l_parts[i * g + j];
      for (int64_t e = 0; e < d; ++e) oi[e] += v.acc[j * d + e];
    }
    if (kept == 0.0f) {
      std::fill(o.begin(), o.end(), 0.0f);
    } else {
      const float lf = static_cast<float>(l);
      for (int64_t e = 0; e < d; ++e) o[e] = (static_cast<float>(oi[e]) * p.deq2) / lf;
    }
    write_row(p, b, h, o.data());
  }
}

// Runs body(first item, partial views, scratch, row pointers) for every work unit (heads_per_unit
// consecutive items), in parallel; scratch buffers live per thread chunk.
template <class Body>
void parallel_units(const Plan& p, const std::vector<Item>& items, Partials& parts, Body&& body) {
  const int64_t per_unit = p.heads_per_unit, units = static_cast<int64_t>(items.size()) / per_unit;
  at::parallel_for(0, units, 1, [&](int64_t u0, int64_t u1) {
    std::vector<float> scratch;
    std::vector<const void*> rows;
    std::vector<PartialView> views(static_cast<size_t>(per_unit));
    for (int64_t u = u0; u < u1; ++u) {
      for (int64_t i = 0; i < per_unit; ++i) views[i] = parts.view(p, u * per_unit + i);
      body(u * per_unit, views.data(), scratch, rows);
    }
  });
}

// Scenarios A/B (§7.5): the probabilities are quantised relative to the row's global maximum, so
// pass 1 writes every fp16 score and its item maximum, the row maxima are merged in chunk order,
// pass 2 quantises P and accumulates P8.V8 exactly.
void run_int8(const Plan& p, const std::vector<Item>& items, Partials& parts, const std::vector<int64_t>& batch_first,
              const std::vector<int64_t>& batch_chunks, bool avx2) {
  std::vector<int64_t> sh_base(p.batch + 1, 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t len = (p.starts[b] < 0 || p.ends[b] <= p.starts[b]) ? 0 : p.ends[b] - p.starts[b];
    sh_base[b + 1] = sh_base[b] + p.heads_q * len;
  }
  std::vector<float> sh_rows(static_cast<size_t>(sh_base[p.batch]));
  std::vector<double> l_parts(items.size() * p.group);
  const int64_t per_unit = p.heads_per_unit;
  parallel_units(p, items, parts, [&](int64_t i0, PartialView* views, std::vector<float>& scratch,
                                      std::vector<const void*>& rows) {
#if defined(__x86_64__)
    if (avx2)
      return isa_avx2::int8_scores_unit(p, &items[i0], per_unit, views, sh_rows.data(), sh_base.data(), scratch, rows);
#endif
    isa_scalar::int8_scores_unit(p, &items[i0], per_unit, views, sh_rows.data(), sh_base.data(), scratch, rows);
  });
  std::vector<float> row_max(static_cast<size_t>(p.batch * p.heads_q), -INFINITY);
  for (int64_t b = 0; b < p.batch; ++b) {
    for (int64_t h = 0; h < p.heads_q; ++h) {
      const int64_t kvh = h / p.group, j = h % p.group;
      float m = -INFINITY;
      for (int64_t c = 0; c < batch_chunks[b]; ++c) {
        const float mc = parts.view(p, batch_first[b] + c * p.heads_kv + kvh).m[j];
        if (mc != -INFINITY) m = (std::isnan(m) || std::isnan(mc)) ? m + mc : std::max(m, mc);
      }
      row_max[b * p.heads_q + h] = m;
    }
  }
  parallel_units(p, items, parts, [&](int64_t i0, PartialView* views, std::vector<float>& scratch,
                                      std::vector<const void*>& rows) {
    double* l = l_parts.data() + i0 * p.group;
#if defined(__x86_64__)
    if (avx2)
      return isa_avx2::int8_pv_unit(p, &items[i0], per_unit, views, row_max.data(), l, sh_rows.data(), sh_base.data(),
                                    scratch, rows);
#endif
    isa_scalar::int8_pv_unit(p, &items[i0], per_unit, views, row_max.data(), l, sh_rows.data(), sh_base.data(),
                             scratch, rows);
  });
  at::parallel_for(0, p.batch * p.heads_kv, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / p.heads_kv, g = r % p.heads_kv;
      combine_int8(p, parts, l_parts.data(), b, g, batch_first[b] + g, batch_chunks[b], p.heads_kv);
    }
  });
}

void run(const Plan& p) {
  // items ordered (batch, chunk, KV head); a unit is heads_per_unit consecutive items
  std::vector<Item> items;
  std::vector<int64_t> batch_first(p.batch + 1, 0), batch_chunks(p.batch, 0);
  for (int64_t b = 0; b < p.batch; ++b) {
    batch_first[b] = static_cast<int64_t>(items.size());
    const int64_t start = p.starts[b], end = p.ends[b];
    if (start < 0 || end <= start) continue;
    for (int64_t c0 = start; c0 < end; c0 += kChunk) {
      ++batch_chunks[b];
      for (int64_t g = 0; g < p.heads_kv; ++g) items.push_back({b, g, c0, std::min(end, c0 + kChunk)});
    }
  }
  Partials parts;
  parts.stride = p.group * (4 + p.head_dim);
  parts.data.resize(static_cast<size_t>(parts.stride * items.size()));
#if defined(__x86_64__)
  const bool avx2 = cpu_features().avx2;
#else
  const bool avx2 = false;
#endif
  if (p.full_int8) {
    run_int8(p, items, parts, batch_first, batch_chunks, avx2);
    return;
  }
  parallel_units(p, items, parts, [&](int64_t i0, PartialView* views, std::vector<float>& scratch,
                                      std::vector<const void*>& rows) {
#if defined(__x86_64__)
    if (avx2) return isa_avx2::process_unit(p, &items[i0], p.heads_per_unit, views, scratch, rows);
#endif
    isa_scalar::process_unit(p, &items[i0], p.heads_per_unit, views, scratch, rows);
  });
  at::parallel_for(0, p.batch * p.heads_kv, 1, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t b = r / p.heads_kv, g = r % p.heads_kv;
      combine(p, parts, b, g, batch_first[b] + g, batch_chunks[b], p.heads_kv);
    }
  });
}

// ------------------------------------------------------------------ ATen binding
ElemType elem_type(const at::Tensor& t) {
  switch (t.scalar_type()) {
    case at::kHalf: return ElemType::f16;
    case at::kBFloat16: return ElemType::bf16;
    case at::kChar: return ElemType::i8;
    case at::kFloat: return ElemType::f32;
    default: TORCH_CHECK(false, "incre_flash_attention: unsupported dtype ", t.scalar_type());
  }
}

at::Tensor last_dim_contiguous(const at::Tensor& t) { return t.stride(-1) == 1 ? t : t.contiguous(); }

// Inputs validated and device values checked by the Python op (ascend_attn.validation /
// kernels.incre_flash_attention.check_device_values); starts/ends already include left padding.
at::Tensor incre_flash_attention_op(
    const at::Tensor& query, at::TensorList key, at::TensorList value, const std::optional<at::Tensor>& atten_mask,
    const std::optional<at::Tensor>& pse_shift, const std::optional<at::Tensor>& antiquant_scale,
    const std::optional<at::Tensor>& antiquant_offset, const std::optional<at::Tensor>& block_table,
    const std::optional<at::Tensor>& quant_scale2, const std::optional<at::Tensor>& quant_offset2,
    c10::string_view layout, c10::string_view kv_form, c10::string_view paged_layout, int64_t heads_q,
    int64_t heads_kv, int64_t head_dim, int64_t block_size, at::IntArrayRef starts, at::IntArrayRef ends,
    bool mask_heads, bool quant_channel, double scale, at::ArrayRef<double> deq) {
  Plan p;
  p.batch = query.size(0);
  p.heads_q = heads_q;
  p.heads_kv = heads_kv;
  p.group = heads_q / heads_kv;
  p.head_dim = head_dim;
  p.scale = static_cast<float>(scale);
  const at::Tensor q = query.contiguous();
  p.q_type = elem_type(q);
  p.query = q.data_ptr();
  p.starts.assign(starts.begin(), starts.end());
  p.ends.assign(ends.begin(), ends.end());

  std::vector<at::Tensor> keep;  // contiguous copies of inputs with a strided last dimension
  std::vector<at::Tensor> ks, vs;
  for (const at::Tensor& t : key) ks.push_back(last_dim_contiguous(t));
  for (const at::Tensor& t : value) vs.push_back(last_dim_contiguous(t));
  p.kv_type = elem_type(ks[0]);
  const int64_t d = head_dim;
  // KV heads of one position are adjacent except in BNSD caches: there a unit is one KV head
  const bool head_major = kv_form == "paged" ? paged_layout == "BNSD" : layout == "BNSD";
  p.heads_per_unit = head_major ? 1 : heads_kv;
  // strides (elements) of the position and head dims of one batch's K/V, and of its batch dim
  auto tg_strides = [&](const at::Tensor& t, int64_t& ts, int64_t& gs, int64_t& bs) {
    bs = t.stride(0);
    if (layout == "BSH") { ts = t.stride(1); gs = d; }
    else if (layout == "BSND") { ts = t.stride(1); gs = t.stride(2); }
    else { ts = t.stride(2); gs = t.stride(1); }
  };
  TORCH_CHECK(ks[0].strides() == vs[0].strides(), "incre_flash_attention: key and value strides differ");
  if (kv_form == "paged") {
    p.paged = true;
    p.block_size = block_size;
    const at::Tensor bt = block_table->contiguous();
    keep.push_back(bt);
    p.block_table = bt.data_ptr<int32_t>();
    p.table_stride = bt.size(1);
    p.page_stride = ks[0].stride(0);
    int64_t ts, gs;
    if (paged_layout == "BSH") { ts = ks[0].stride(1); gs = d; }
    else { ts = ks[0].stride(2); gs = ks[0].stride(1); }
    for (int64_t b = 0; b < p.batch; ++b) {
      p.k_base.push_back(ks[0].data_ptr());
      p.v_base.push_back(vs[0].data_ptr());
      p.t_stride.push_back(ts);
      p.g_stride.push_back(gs);
    }
  } else if (kv_form == "list") {
    for (int64_t b = 0; b < p.batch; ++b) {
      if (ks[b].strides() != vs[b].strides()) { ks[b] = ks[b].contiguous(); vs[b] = vs[b].contiguous(); }
      int64_t ts, gs, bs;
      tg_strides(ks[b], ts, gs, bs);
      p.k_base.push_back(ks[b].data_ptr());
      p.v_base.push_back(vs[b].data_ptr());
      p.t_stride.push_back(ts);
      p.g_stride.push_back(gs);
    }
  } else {
    int64_t ts, gs, bs;
    tg_strides(ks[0], ts, gs, bs);
    const int64_t es = elem_size(p.kv_type);
    for (int64_t b = 0; b < p.batch; ++b) {
      p.k_base.push_back(static_cast<const char*>(ks[0].data_ptr()) + b * bs * es);
      p.v_base.push_back(static_cast<const char*>(vs[0].data_ptr()) + b * bs * es);
      p.t_stride.push_back(ts);
      p.g_stride.push_back(gs);
    }
  }
  if (atten_mask) {
    const at::Tensor m = atten_mask->contiguous();
    keep.push_back(m);
    p.mask = static_cast<const uint8_t*>(m.data_ptr());
    const int64_t sm = m.size(-1);
    if (mask_heads) { p.mask_b = m.size(0) > 1 ? heads_q * sm : 0; p.mask_h = sm; }
    else { p.mask_b = m.numel() / p.batch; p.mask_h = 0; }
  }
  if (pse_shift) {
    const at::Tensor ps = pse_shift->contiguous();
    keep.push_back(ps);
    p.pse = ps.data_ptr();
    p.pse_type = elem_type(ps);
    const int64_t sp = ps.size(-1);
    p.pse_b = ps.size(0) > 1 ? heads_q * sp : 0;
    p.pse_h = sp;
  }
  if (antiquant_scale) {
    const at::Tensor sc = antiquant_scale->to(at::kFloat).contiguous().reshape({2, -1});
    keep.push_back(sc);
    p.aq_channel = sc.size(1) > 1;
    p.aq_scale = sc.data_ptr<float>();
    p.av_scale = p.aq_scale + sc.size(1);
    if (antiquant_offset) {
      const at::Tensor off = antiquant_offset->to(at::kFloat).contiguous().reshape({2, -1});
      keep.push_back(off);
      p.aq_offset = off.data_ptr<float>();
      p.av_offset = p.aq_offset + off.size(1);
    }
  }
  at::ScalarType out_dtype = query.scalar_type();
  if (!deq.empty()) {  // scenarios A/B: FP19 dequant values and quant_scale1; fp16 out unless quantised
    TORCH_CHECK(deq.size() == 3, "incre_flash_attention: deq holds (dequant1, dequant2, quant_scale1)");
    p.full_int8 = true;
    p.deq1 = static_cast<float>(deq[0]);
    p.deq2 = static_cast<float>(deq[1]);
    p.qs1 = static_cast<float>(deq[2]);
    out_dtype = at::kHalf;
  }
  if (quant_scale2) {
    const at::Tensor sc = quant_scale2->to(at::kFloat).contiguous();
    keep.push_back(sc);
    p.quant = quant_channel ? 2 : 1;
    p.q2_scale = sc.data_ptr<float>();
    if (quant_offset2) {
      const at::Tensor off = quant_offset2->to(at::kFloat).contiguous();
      keep.push_back(off);
      p.q2_offset = off.data_ptr<float>();
    }
    out_dtype = at::kChar;
  }
  at::Tensor out = at::empty(query.sizes(), query.options().dtype(out_dtype));
  p.out_type = elem_type(out);
  p.out = out.data_ptr();
  run(p);
  return out;
}

}  // namespace ifa
}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def("incre_flash_attention(Tensor query, Tensor[] key, Tensor[] value, Tensor? atten_mask, Tensor? pse_shift, "
        "Tensor? antiquant_scale, Tensor? antiquant_offset, Tensor? block_table, Tensor? quant_scale2, "
        "Tensor? quant_offset2, str layout, str kv_form, str paged_layout, int heads_q, int heads_kv, int head_dim, "
        "int block_size, int[] starts, int[] ends, bool mask_heads, bool quant_channel, float scale, "
        "float[] deq) -> Tensor");
}

TORCH_LIBRARY_IMPL(ascend_attn_cpu, CPU, m) {
  m.impl("incre_flash_attention", &ascend_attn_cpu::ifa::incre_flash_attention_op);
}
