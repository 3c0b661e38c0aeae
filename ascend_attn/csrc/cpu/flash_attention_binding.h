// ATen side of the FlashAttention CPU kernels: turns the op arguments (already validated by the
// Python plan, ascend_attn/validation/flash_attention.py) into the framework-neutral fa::Plan and keeps the
// float32 copies it points to alive.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <optional>
#include <vector>

#include "flash_attention.h"
#include "fresh_tensor.h"

namespace ascend_attn_cpu {
namespace fa {

// Tile shape: block_q * G query rows (a multiple of the micro-kernel's 6 rows) x block_k keys.
// Measured here (Zen 3, one thread, N=8, D=128, sequences 512..2k): 192 x 128 ran forward+backward
// 10-15 % faster than 96 x 256 or 128 x 256 (the dK / dV products sum over the tile's rows, so
// taller tiles store their accumulators less often) and the forward as fast; the score tile
// (192 x 128 floats), the Q / dO / accumulator tiles and one K / V block stay inside L2.
constexpr int64_t kTileRows = 192;
constexpr int64_t kBlockK = 128;

struct BoundPlan {
  Plan plan;
  std::vector<int64_t> seq_q, seq_kv, band_lo, band_hi, prefix;
  at::Tensor pse, drop_mask, atten_mask;  // float32 / uint8 contiguous copies (or the inputs)
};

inline at::Tensor as_f32(const at::Tensor& t) {
  if (t.scalar_type() == at::kFloat && t.is_contiguous()) return t;
  return fresh_tensor(t.sizes(), t.options().dtype(at::kFloat)).copy_(t);
}

// The element type the kernels read a float tensor as (fp32 / fp16 / bf16).
inline ElemType elem_type(const at::Tensor& t) {
  if (t.scalar_type() == at::kHalf) return ElemType::f16;
  if (t.scalar_type() == at::kBFloat16) return ElemType::bf16;
  TORCH_CHECK(t.scalar_type() == at::kFloat, "flash attention native: float32 / float16 / bfloat16 expected");
  return ElemType::f32;
}

inline Round round_of(at::ScalarType dtype) {
  if (dtype == at::kHalf) return Round::kFp16HalfAway;
  if (dtype == at::kBFloat16) return Round::kBf16Even;
  return Round::kNone;
}

inline void bind_plan(BoundPlan& out, const at::Tensor& query, const at::Tensor& key, at::IntArrayRef seq_q,
                      at::IntArrayRef seq_kv, double scale, const std::optional<at::Tensor>& pse, int64_t pse_form,
                      int64_t pse_type, int64_t q_start, int64_t kv_start, const std::optional<at::Tensor>& drop_mask,
                      double keep_prob, const std::optional<at::Tensor>& atten_mask, int64_t mask_form,
                      at::IntArrayRef band_lo, at::IntArrayRef band_hi, at::IntArrayRef prefix, bool stats_tnd,
                      int64_t block_q, int64_t block_k) {
  TORCH_CHECK(query.dim() == 3 && key.dim() == 3, "flash attention native: TND tensors expected");
  TORCH_CHECK(seq_q.size() == seq_kv.size() && band_lo.size() == seq_q.size() && band_hi.size() == seq_q.size() &&
                  prefix.size() == seq_q.size(),
              "flash attention native: per-sequence lists must have equal lengths");
  out.seq_q.assign(seq_q.begin(), seq_q.end());
  out.seq_kv.assign(seq_kv.begin(), seq_kv.end());
  out.band_lo.assign(band_lo.begin(), band_lo.end());
  out.band_hi.assign(band_hi.begin(), band_hi.end());
  out.prefix.assign(prefix.begin(), prefix.end());
  Plan& p = out.plan;
  p.batch = static_cast<int64_t>(out.seq_q.size());
  p.seq_q = out.seq_q.data();
  p.seq_kv = out.seq_kv.data();
  p.band_lo = out.band_lo.data();
  p.band_hi = out.band_hi.data();
  p.prefix = out.prefix.data();
  p.heads_q = query.size(1);
  p.heads_kv = key.size(1);
  p.head_dim = query.size(2);
  p.scale = static_cast<float>(scale);
  p.round = round_of(query.scalar_type());
  p.stats_tnd = stats_tnd;
  // block sizes: 0 = the defaults; tests pass tiny ones (many partial and skipped tiles)
  p.block_q = block_q > 0 ? block_q : std::max<int64_t>(1, kTileRows / p.group());
  p.block_k = block_k > 0 ? block_k : kBlockK;
  p.pse_form = static_cast<PseForm>(pse_form);
  p.pse_type = static_cast<int>(pse_type);
  p.q_start = q_start;
  p.kv_start = kv_start;
  if (p.pse_form != PseForm::kNone) {
    TORCH_CHECK(pse.has_value(), "flash attention native: pse form given without pse");
    out.pse = as_f32(*pse);
    p.pse = out.pse.data_ptr<float>();
    if (p.pse_form == PseForm::kSlopes) {
      p.pse_batch_stride = out.pse.dim() == 2 ? out.pse.size(1) : 0;
    } else if (p.pse_form == PseForm::kAlibi) {
      p.alibi_rows = out.pse.size(2);
      p.alibi_cols = out.pse.size(3);
      p.pse_batch_stride = out.pse.size(0) > 1 ? out.pse.stride(0) : 0;
    }
  }
  if (drop_mask.has_value()) {
    out.drop_mask = drop_mask->reshape(-1).contiguous();
    TORCH_CHECK(out.drop_mask.scalar_type() == at::kByte, "flash attention native: drop_mask must be uint8");
    p.drop_mask = out.drop_mask.data_ptr<uint8_t>();
    p.keep_prob = static_cast<float>(keep_prob);
  }
  p.mask_form = static_cast<MaskForm>(mask_form);
  if (p.mask_form != MaskForm::kNone) {
    TORCH_CHECK(atten_mask.has_value() && atten_mask->dim() == 2, "flash attention native: 2-D atten_mask expected");
    out.atten_mask = atten_mask->contiguous();
    if (out.atten_mask.scalar_type() == at::kBool) out.atten_mask = out.atten_mask.view(at::kByte);
    TORCH_CHECK(out.atten_mask.scalar_type() == at::kByte, "flash attention native: atten_mask must be bool/uint8");
    p.mask = out.atten_mask.data_ptr<uint8_t>();
    p.mask_ld = out.atten_mask.size(1);
  }
}

// Runs process(item, tiles) over the work items in parallel: each thread has its own Tiles and a
// single-threaded BLAS, and every item owns its outputs, so results do not depend on the thread count.
template <class Tiles, class Item, class F>
void run_items(const Plan& plan, const std::vector<Item>& items, F&& process) {
  at::parallel_for(0, static_cast<int64_t>(items.size()), 1, [&](int64_t begin, int64_t end) {
    SingleThreadedGemm single;
    Tiles tiles(plan);
    for (int64_t it = begin; it < end; ++it) process(items[it], tiles);
  });
}

// A float32 result holding values on the dtype's grid -> a tensor of that dtype (exact).
inline at::Tensor narrow_exact(const at::Tensor& values, at::ScalarType dtype) {
  return dtype == at::kFloat ? values : fresh_tensor(values.sizes(), values.options().dtype(dtype)).copy_(values);
}

}  // namespace fa
}  // namespace ascend_attn_cpu
