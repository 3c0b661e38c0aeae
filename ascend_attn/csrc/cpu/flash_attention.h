// FlashAttention varlen (TND) forward V4 / grad V4 on CPU: the framework-neutral core shared by
// flash_attention_fwd.cpp and flash_attention_grad.cpp (semantics.md §2-§6).
//
// The products are fp32 GEMMs (gemm.h) whose operands are exact fp16/bf16 values: products exact,
// accumulation fp32, as the spec asks. Inputs are read in their own dtype and converted to float32
// row by row (load_rows, row_convert.h) as K / V are laid out once per (sequence, kv head) and
// thread (HeadLayout) and Q enters a tile; the backward's Q, dO and O arrive as float32 copies made
// by the binding. P and dS are rounded to the input dtype's grid (kept as float32 values) before
// their products; the forward's output is rounded the same way as it is written in its dtype
// (store_row), the gradients are rounded in float32 and narrowed exactly by the binding.
//
// Work is split into (query block x key block) tiles; a tile's scores stay in one cache-resident
// [rows, cols] buffer while scale, pse, mask, softmax, dropout and rounding run over it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "common.h"
#include "decode_simd.h"
#include "gemm.h"
#include "row_convert.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace ascend_attn_cpu {
namespace fa {

constexpr float kFltMax = std::numeric_limits<float>::max();
constexpr int64_t kUnbounded = int64_t(1) << 62;  // band limit meaning "no bound"

// Rounding of P / dS / outputs onto the input dtype's grid (semantics.md §0.5).
enum class Round : int { kNone = 0, kFp16HalfAway = 1, kBf16Even = 2 };
// pse forms, as FlashPlan.pse_form names them.
enum class PseForm : int { kNone = 0, kFull = 1, kRow = 2, kAlibi = 3, kSlopes = 4 };
// Mask forms that carry content the kernel reads (compressed masks are pure index rules).
enum class MaskForm : int { kNone = 0, kLocal = 1, kGlobal = 2 };

// The validated arguments (Python's FlashPlan) plus pointers to the optional inputs.
struct Plan {
  int64_t batch = 0;
  const int64_t* seq_q = nullptr;   // [batch] query rows per sequence
  const int64_t* seq_kv = nullptr;  // [batch] key rows per sequence
  int64_t heads_q = 0, heads_kv = 0, head_dim = 0;
  float scale = 1.f;
  // keep(i, j) = (band_lo[b] <= j - i <= band_hi[b]  or  j < prefix[b])  and  mask(i, j) == 0
  const int64_t* band_lo = nullptr;
  const int64_t* band_hi = nullptr;
  const int64_t* prefix = nullptr;  // 0 where the mode has no prefix
  MaskForm mask_form = MaskForm::kNone;
  const uint8_t* mask = nullptr;  // nonzero = masked; row-major with mask_ld columns
  int64_t mask_ld = 0;
  PseForm pse_form = PseForm::kNone;
  int pse_type = 1;
  const float* pse = nullptr;
  int64_t pse_batch_stride = 0;  // slopes [B, N1] / alibi [B, N1, rows, s_ref]: 0 when broadcast
  int64_t alibi_rows = 0, alibi_cols = 0;
  int64_t q_start = 0, kv_start = 0;
  const uint8_t* drop_mask = nullptr;  // bit-packed keep bits (LSB first), or null: no dropout
  float keep_prob = 1.f;
  Round round = Round::kNone;
  bool stats_tnd = false;  // statistics data layout: TND (true) or per-sequence NTD (false)
  int64_t block_q = 64;    // query positions per tile (rows of the tile: block_q * G)
  int64_t block_k = 256;   // key positions per tile

  int64_t group() const { return heads_q / heads_kv; }
};

// Offsets of sequence b in the packed tensors and the flat per-sequence blocks (§0.2, §5, §6).
struct Sequence {
  int64_t b, oq, ok, s1, s2;
  int64_t pair_base;  // N1 * sum_{b'<b} S1 S2: drop_mask bits and the full pse block
  int64_t row_base;   // N1 * sum_{b'<b} S2: the broadcast-row pse block
};

inline std::vector<Sequence> sequences(const Plan& p) {
  std::vector<Sequence> out;
  int64_t oq = 0, ok = 0, pair = 0, row = 0;
  for (int64_t b = 0; b < p.batch; ++b) {
    const int64_t s1 = p.seq_q[b], s2 = p.seq_kv[b];
    out.push_back({b, oq, ok, s1, s2, pair, row});
    oq += s1; ok += s2; pair += p.heads_q * s1 * s2; row += p.heads_q * s2;
  }
  return out;
}

// Statistics lane 0 of (sequence, local row i, head h) in the [T1, N1, 8] tensor (§0.3).
inline int64_t stats_offset(const Plan& p, const Sequence& s, int64_t i, int64_t h) {
  return p.stats_tnd ? ((s.oq + i) * p.heads_q + h) * 8 : (s.oq * p.heads_q + h * s.s1 + i) * 8;
}

// ----------------------------------------------------------------------------- K / V layouts
// The K or V rows of one (sequence, kv head) laid out as a B operand of the products (gemm.h),
// once, and kept while a thread's work items stay on that head (K's own rows are N2 * D apart,
// often 4 KiB: read in place they would fall into a few cache sets):
//   transposed: per key block of block_k positions, [D, ld] with ld = padded_ld(block_k)
//               (K^T for Q K^T, V^T for dO V^T); a tile never crosses a key block;
//   rows:       [S2, ld] with ld = padded_ld(D) (V for P V, K for dS K).
class HeadLayout {
 public:
  HeadLayout(const Plan& p, bool transposed)
      : transposed_(transposed), dim_(p.head_dim), block_(p.block_k),
        ld_(transposed ? padded_ld(p.block_k) : padded_ld(p.head_dim)), kv_ld_(p.heads_kv * p.head_dim) {}

  // Lays out head n2 of sequence s from src ([T2, N2, D] of `type`) unless it already holds it.
  void load(const Sequence& s, int64_t n2, const void* src, ElemType type) {
    if (s.b == seq_ && n2 == n2_) return;
    seq_ = s.b;
    n2_ = n2;
    const int64_t first = s.ok * kv_ld_ + n2 * dim_;  // element offset of the head's first row
    if (!transposed_) {
      float* dst = reserve(s.s2 * ld_);
      load_rows(src, type, first, kv_ld_, s.s2, dim_, dst, ld_);
      return;
    }
    const int64_t blocks = (s.s2 + block_ - 1) / block_;
    float* dst = reserve(blocks * dim_ * ld_);
    for (int64_t jb = 0; jb < blocks; ++jb) {
      const int64_t j0 = jb * block_, n = std::min(block_, s.s2 - j0);
      const float* rows = static_cast<const float*>(src) + first + j0 * kv_ld_;
      int64_t rows_ld = kv_ld_;
      if (type != ElemType::f32) {  // the block's rows in float32 first
        scratch_.resize(block_ * dim_);
        load_rows(src, type, first + j0 * kv_ld_, kv_ld_, n, dim_, scratch_.data(), dim_);
        rows = scratch_.data();
        rows_ld = dim_;
      }
      pack_transposed(rows, rows_ld, n, dim_, dst + jb * dim_ * ld_, ld_);
    }
  }

  // The B operand starting at key position j of the sequence (local index).
  const float* at(int64_t j) const {
    return transposed_ ? data_ + (j / block_) * dim_ * ld_ + j % block_ : data_ + j * ld_;
  }
  int64_t ld() const { return ld_; }

 private:
  bool transposed_;
  int64_t dim_, block_, ld_, kv_ld_;
  // n floats starting on a cache line (a 16-float row of B then spans one line, not two)
  float* reserve(int64_t n) {
    storage_.resize(n + 16);
    const auto misalign = reinterpret_cast<uintptr_t>(storage_.data()) % 64;
    data_ = storage_.data() + (misalign ? (64 - misalign) / sizeof(float) : 0);
    return data_;
  }

  int64_t seq_ = -1, n2_ = -1;
  std::vector<float> storage_, scratch_;
  float* data_ = nullptr;
};

// ----------------------------------------------------------------------------- keep rule

enum class BlockKeep { kNone, kAll, kPartial };

// Which positions of the block [i0, i1) x [j0, j1) the band / prefix part of the rule keeps.
inline BlockKeep band_block(const Plan& p, const Sequence& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1) {
  const int64_t lo = p.band_lo[s.b], hi = p.band_hi[s.b], prefix = p.prefix[s.b];
  BlockKeep band;
  if (lo > hi || i1 - 1 + hi < j0 || i0 + lo > j1 - 1) band = BlockKeep::kNone;
  else if (i1 - 1 + lo <= j0 && i0 + hi >= j1 - 1) band = BlockKeep::kAll;
  else band = BlockKeep::kPartial;
  if (j0 < prefix) band = (band == BlockKeep::kAll || j1 <= prefix) ? BlockKeep::kAll : BlockKeep::kPartial;
  return band;
}

// Narrows the key columns [j0, j1) of a block to those the band / prefix can keep for the query
// positions [i0, i1) (the diagonal tiles of causal attention shrink to their kept triangle).
inline void trim_columns(const Plan& p, const Sequence& s, int64_t i0, int64_t i1, int64_t& j0, int64_t& j1) {
  const int64_t lo = p.band_lo[s.b], hi = p.band_hi[s.b], prefix = p.prefix[s.b];
  j1 = std::min(j1, std::max(i1 + hi, prefix));  // last kept column: i1 - 1 + hi, or prefix - 1
  if (j0 >= prefix) j0 = std::max(j0, i0 + lo);
}

// Query positions per row band of a partly kept tile (see for_each_row_band).
constexpr int64_t kBandRows = 24;

// Calls f(a, b, c0, c1) for the row bands [a, b) of the tile [i0, i1) x [j0, j1), each with the
// columns [c0, c1) its band / prefix can keep: a diagonal tile then computes about half its area
// instead of all of it. A fully kept tile is one band with all its columns.
template <class F>
void for_each_row_band(const Plan& p, const Sequence& s, int64_t i0, int64_t i1, int64_t j0, int64_t j1,
                       bool partial, F&& f) {
  // bands start on a multiple of kBlockRows tile rows (the blocked Q tile of gemm_blocked_a)
  int64_t step = std::max<int64_t>(1, kBandRows / p.group());
  while (step * p.group() % kBlockRows != 0) ++step;
  if (!partial) step = i1 - i0;
  for (int64_t a = i0; a < i1; a += step) {
    const int64_t b = std::min(i1, a + step);
    int64_t c0 = j0, c1 = j1;
    if (partial) {
      if (band_block(p, s, a, b, c0, c1) == BlockKeep::kNone) continue;  // nothing kept: m, l, acc unchanged
      trim_columns(p, s, a, b, c0, c1);
    }
    f(a, b, c0, c1);
  }
}

// Trims the block (trim_columns), classifies it and, where a mask tensor takes part, fills
// keep[(i - i0) * (j1 - j0) + (j - j0)] (1 = kept; positions are shared by the G heads of a group).
// Without a mask tensor the bitmap stays untouched: the band / prefix rule is two column ranges
// per row, applied by fill_outside_band.
inline BlockKeep keep_block(const Plan& p, const Sequence& s, int64_t i0, int64_t i1, int64_t& j0, int64_t& j1,
                            uint8_t* keep) {
  BlockKeep band = band_block(p, s, i0, i1, j0, j1);
  if (band == BlockKeep::kNone) return band;
  trim_columns(p, s, i0, i1, j0, j1);
  band = band_block(p, s, i0, i1, j0, j1);
  if (p.mask_form == MaskForm::kNone) return band;  // rows apply the band themselves (fill_outside_band)
  const int64_t cols = j1 - j0, lo = p.band_lo[s.b], hi = p.band_hi[s.b], prefix = p.prefix[s.b];
  const uint8_t* mask = nullptr;
  if (p.mask_form == MaskForm::kLocal) mask = p.mask;
  else if (p.mask_form == MaskForm::kGlobal) mask = p.mask + s.oq * p.mask_ld + s.ok;
  int64_t kept = 0;
  for (int64_t i = i0; i < i1; ++i) {
    uint8_t* row = keep + (i - i0) * cols;
    const uint8_t* mrow = mask ? mask + i * p.mask_ld : nullptr;
    for (int64_t j = j0; j < j1; ++j) {
      const int64_t d = j - i;
      bool k = band == BlockKeep::kAll || (d >= lo && d <= hi) || j < prefix;
      if (mrow && mrow[j]) k = false;
      row[j - j0] = k;
      kept += k;
    }
  }
  if (kept == 0) return BlockKeep::kNone;
  return kept == (i1 - i0) * cols ? BlockKeep::kAll : BlockKeep::kPartial;
}

// Row i (local position) of a partly kept tile whose rule is the band / prefix alone: the columns
// of [c0, c1) outside [c0, prefix) and [i + lo, i + hi] get `value` (-inf scores, 0 probabilities).
// z holds the row's columns from c0.
inline void fill_outside_band(const Plan& p, const Sequence& s, int64_t i, int64_t c0, int64_t c1, float* z,
                              float value) {
  const int64_t lo = p.band_lo[s.b], hi = p.band_hi[s.b];
  const int64_t prefix_end = std::min(std::max(p.prefix[s.b], c0), c1);  // kept: [c0, prefix_end)
  int64_t b0 = std::max(c0, i + lo), b1 = std::min(c1, i + hi + 1);      // kept: [b0, b1)
  if (lo > hi || b0 >= b1) b0 = b1 = prefix_end;
  const auto fill = [&](int64_t a, int64_t b) {
    if (a < b) std::fill(z + (a - c0), z + (b - c0), value);
  };
  fill(prefix_end, std::min(b0, c1));
  fill(std::max(b1, prefix_end), c1);
}

// ----------------------------------------------------------------------------- pse (§5)

// Adds the pse of (sequence, head h, local row i) to scores s[0 .. j1 - j0) (already scaled).
inline void add_pse_row(const Plan& p, const Sequence& s, int64_t h, int64_t i, int64_t j0, int64_t j1, float* z) {
  const int64_t cols = j1 - j0;
  const float mul = p.pse_type == 1 ? p.scale : 1.f;  // type 1: (QK + pse) * scale = QK*scale + pse*scale
  switch (p.pse_form) {
    case PseForm::kNone:
      return;
    case PseForm::kFull: {
      const float* src = p.pse + s.pair_base + (h * s.s1 + i) * s.s2 + j0;
      for (int64_t c = 0; c < cols; ++c) z[c] += src[c] * mul;
      return;
    }
    case PseForm::kRow: {
      const float* src = p.pse + s.row_base + h * s.s2 + j0;
      for (int64_t c = 0; c < cols; ++c) z[c] += src[c] * mul;
      return;
    }
    case PseForm::kAlibi: {
      // Toeplitz by k = i - j: k >= 0 from the last row (column s_ref - 1 - k), k < 0 from the last
      // column (row rows - 1 + k); out-of-range diagonals clamp to the table's ends.
      const int64_t rows = p.alibi_rows, cols_ref = p.alibi_cols;
      const float* comp = p.pse + s.b * p.pse_batch_stride + h * rows * cols_ref;
      const int64_t last = rows - 1 + cols_ref - 1;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t idx = std::min(std::max(i - (j0 + c) + rows - 1, int64_t(0)), last);
        const float v = idx < rows - 1 ? comp[idx * cols_ref + cols_ref - 1]
                                       : comp[(rows - 1) * cols_ref + cols_ref - 1 - (idx - (rows - 1))];
        z[c] += v * mul;
      }
      return;
    }
    case PseForm::kSlopes: {
      const float neg_slope = -p.pse[s.b * p.pse_batch_stride + h];
      const int64_t base = j0 + p.kv_start - i - p.q_start;
      for (int64_t c = 0; c < cols; ++c) {
        const int64_t delta = base + c;
        float dist = static_cast<float>(delta < 0 ? -delta : delta);
        if (p.pse_type == 3) dist = std::sqrt(dist);
        z[c] += neg_slope * dist;
      }
      return;
    }
  }
}

// keep bit / keep_prob of (sequence, head h, row i) for columns [j0, j1) into f (§6).
inline void dropout_row(const Plan& p, const Sequence& s, int64_t h, int64_t i, int64_t j0, int64_t j1, float* f) {
  const float scale = 1.f / p.keep_prob;
  const int64_t e0 = s.pair_base + (h * s.s1 + i) * s.s2 + j0;
  for (int64_t c = 0; c < j1 - j0; ++c) {
    const int64_t e = e0 + c;
    f[c] = ((p.drop_mask[e >> 3] >> (e & 7)) & 1) ? scale : 0.f;
  }
}

// ----------------------------------------------------------------------------- vector primitives
// Chosen once at run time: AVX2+FMA where the CPU has it, else portable scalar code.

struct RowOps {
  float (*max)(const float* x, int64_t n);
  // x[c] = exp(x[c] - m); returns the sum (fixed summation order: results never depend on threads)
  float (*exp_sum)(float* x, int64_t n, float m);
  // x[c] = exp(x[c] - m) / l
  void (*exp_div)(float* x, int64_t n, float m, float l);
  void (*scale)(float* x, int64_t n, float a);
  // x[c] onto the grid of the input dtype (values stay float32)
  void (*round)(float* x, int64_t n, Round mode);
  float (*dot)(const float* a, const float* b, int64_t n);
};

const RowOps& row_ops();
// The name of the row-op path in use ("avx2" or "scalar"), for `ascend-attn info` style reports.
const char* row_ops_name();

// Scalar rounding of one value onto the fp16 / bf16 grid (the reference the vector paths follow).
inline float round_scalar(float x, Round mode) {
  if (mode == Round::kFp16HalfAway) return fp16_to_float(float_to_fp16_half_away(x));
  if (mode == Round::kBf16Even) return bf16_to_float(float_to_bf16_rne(x));
  return x;
}

}  // namespace fa
}  // namespace ascend_attn_cpu
