// FlashAttentionVarLenScore V4 forward on CPU (semantics.md §2): one pass per (query block x key
// block) tile with an online softmax. Core: ForwardKernel (plain pointers); binding at the bottom.
#include <torch/library.h>

#include <numeric>

#include "flash_attention_binding.h"

namespace ascend_attn_cpu {
namespace fa {
namespace {

constexpr float kInf = std::numeric_limits<float>::infinity();

// One work item: kv head n2 of sequence s, query positions [i0, i1); its rows are the pairs
// (position i, head h of the group), r = (i - i0) * G + g.
struct ForwardItem {
  int64_t seq, n2, i0, i1;
};

// One thread's tiles: rows = block_q * G query rows, block_k key columns; K^T and V of the
// item's (sequence, kv head).
struct ForwardTiles {
  std::vector<float> qt, acc, scores, drop, m, l;
  std::vector<float> rows_f32;  // the item's Q rows in float32 (CopyIn), then one output row (CopyOut)
  std::vector<uint8_t> keep;
  HeadLayout kt, v;
  explicit ForwardTiles(const Plan& p) : kt(p, /*transposed=*/true), v(p, /*transposed=*/false) {
    const int64_t rows = p.block_q * p.group(), d = p.head_dim;
    rows_f32.assign(rows * d, 0.f);
    qt.assign((rows + kBlockRows - 1) / kBlockRows * kBlockRows * d, 0.f);  // whole row blocks
    acc.assign(rows * d, 0.f);
    scores.assign(rows * p.block_k, 0.f);
    keep.assign(p.block_q * p.block_k, 0);
    drop.assign(p.block_k, 0.f);
    m.assign(rows, 0.f);
    l.assign(rows, 0.f);
  }
};

class ForwardKernel {
 public:
  // q [T1, N1, D], k / v [T2, N2, D] contiguous, all of `type`; out [T1, N1, D] of `type`, stats
  // [T1, N1, 8] float32: every row of a sequence written (the rows past the last one are not).
  ForwardKernel(const Plan& p, const void* q, const void* k, const void* v, ElemType type, void* out, float* smax,
                float* ssum)
      : p_(p), q_(q), k_(k), v_(v), type_(type), out_(out), smax_(smax), ssum_(ssum), seqs_(sequences(p)),
        ops_(row_ops()) {
    for (const Sequence& s : seqs_) {
      if (s.s1 == 0) continue;
      for (int64_t n2 = 0; n2 < p.heads_kv; ++n2)
        for (int64_t i0 = 0; i0 < s.s1; i0 += p.block_q)
          items_.push_back({s.b, n2, i0, std::min(s.s1, i0 + p.block_q)});
    }
  }

  void run() {
    run_items<ForwardTiles>(p_, items_, [this](const ForwardItem& item, ForwardTiles& t) { Process(item, t); });
  }

 private:
  void Process(const ForwardItem& item, ForwardTiles& t) {
    const Sequence& s = seqs_[item.seq];
    CopyIn(s, item, t);
    t.kt.load(s, item.n2, k_, type_);
    t.v.load(s, item.n2, v_, type_);
    for (int64_t j0 = 0; j0 < s.s2; j0 += p_.block_k) {
      int64_t c0 = j0, c1 = std::min(s.s2, j0 + p_.block_k);
      const BlockKeep kind = keep_block(p_, s, item.i0, item.i1, c0, c1, t.keep.data());
      if (kind == BlockKeep::kNone) continue;  // the mask removes the whole block
      Compute(s, item, c0, c1, kind == BlockKeep::kPartial, t);
    }
    CopyOut(s, item, t);
  }

  // Q rows of the item, times scale (one pass over q instead of one per score tile); fresh m, l, acc.
  void CopyIn(const Sequence& s, const ForwardItem& item, ForwardTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, rows = (item.i1 - item.i0) * g_size;
    // the G heads of a position are adjacent: one row of G * D elements per position
    load_rows(q_, type_, ((s.oq + item.i0) * p_.heads_q + item.n2 * g_size) * d, p_.heads_q * d, item.i1 - item.i0,
              g_size * d, t.rows_f32.data(), g_size * d);
    for (int64_t r = 0; r < rows; ++r) {
      const float* src = t.rows_f32.data() + r * d;
      // blocked for gemm_blocked_a: element (r, c) at (r / 6) * 6 * d + c * 6 + r % 6
      float* dst = t.qt.data() + (r / kBlockRows) * kBlockRows * d + r % kBlockRows;
      for (int64_t c = 0; c < d; ++c) dst[c * kBlockRows] = src[c] * p_.scale;
    }
    std::fill(t.m.begin(), t.m.begin() + rows, -kInf);
    std::fill(t.l.begin(), t.l.begin() + rows, 0.f);
    std::fill(t.acc.begin(), t.acc.begin() + rows * d, 0.f);
  }

  // One tile: scores, pse, mask, online softmax, dropout, rounding of P, then acc += P V; a partly
  // kept tile band by band, each on the columns its rows can keep.
  void Compute(const Sequence& s, const ForwardItem& item, int64_t j0, int64_t j1, bool partial, ForwardTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, ld = p_.block_k;
    for_each_row_band(p_, s, item.i0, item.i1, j0, j1, partial, [&](int64_t a, int64_t b, int64_t c0, int64_t c1) {
      const int64_t r0 = (a - item.i0) * g_size, r1 = (b - item.i0) * g_size, cols = c1 - c0;
      float* z_all = t.scores.data();
      gemm_blocked_a(r1 - r0, cols, d, t.qt.data() + r0 * d, t.kt.at(c0), t.kt.ld(), z_all + r0 * ld, ld, false);
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t il = r / g_size, i = item.i0 + il, h = item.n2 * g_size + r % g_size;
        float* z = z_all + r * ld;
        add_pse_row(p_, s, h, i, c0, c1, z);
        if (partial && p_.mask_form == MaskForm::kNone) {
          fill_outside_band(p_, s, i, c0, c1, z, -kInf);
        } else if (partial) {
          const uint8_t* keep = t.keep.data() + il * (j1 - j0) + (c0 - j0);
          for (int64_t c = 0; c < cols; ++c)
            if (!keep[c]) z[c] = -kInf;
        }
        const float tile_max = ops_.max(z, cols);  // NaN when a kept score is NaN: it must propagate
        const float m_new = std::isnan(tile_max) ? tile_max : std::max(t.m[r], tile_max);
        const float m_safe = m_new == -kInf ? 0.f : m_new;  // rows with nothing kept yet
        const float alpha = std::exp(t.m[r] - m_safe);
        t.l[r] = t.l[r] * alpha + ops_.exp_sum(z, cols, m_safe);
        t.m[r] = m_new;
        if (p_.drop_mask) {
          dropout_row(p_, s, h, i, c0, c1, t.drop.data());
          for (int64_t c = 0; c < cols; ++c) z[c] *= t.drop[c];
        }
        ops_.round(z, cols, p_.round);
        if (alpha != 1.f) ops_.scale(t.acc.data() + r * d, d, alpha);
      }
      gemm(r1 - r0, d, cols, z_all + r0 * ld, ld, 1, t.v.at(c0), t.v.ld(), t.acc.data() + r0 * d, d,
           true);
    });
  }

  // out = acc / l, written in the input dtype (rounded onto its grid); statistics x 8 lanes; empty
  // rows (zeros, §9a).
  void CopyOut(const Sequence& s, const ForwardItem& item, ForwardTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, rows = (item.i1 - item.i0) * g_size;
    float* o = t.rows_f32.data();
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = item.i0 + r / g_size, h = item.n2 * g_size + r % g_size;
      const bool empty = t.l[r] == 0.f;
      const float* a = t.acc.data() + r * d;
      const float l = t.l[r];
      if (empty)
        std::fill(o, o + d, 0.f);
      else
        for (int64_t c = 0; c < d; ++c) o[c] = a[c] / l;
      store_row(o, d, type_, out_, ((s.oq + i) * p_.heads_q + h) * d);
      const int64_t off = stats_offset(p_, s, i, h);
      std::fill(smax_ + off, smax_ + off + 8, empty ? -kFltMax : t.m[r]);
      std::fill(ssum_ + off, ssum_ + off + 8, empty ? kFltMax : t.l[r]);
    }
  }

  const Plan& p_;
  const void *q_, *k_, *v_;
  ElemType type_;
  void* out_;
  float *smax_, *ssum_;
  std::vector<Sequence> seqs_;
  const RowOps& ops_;
  std::vector<ForwardItem> items_;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_fwd(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, at::IntArrayRef seq_q,
    at::IntArrayRef seq_kv, double scale, const std::optional<at::Tensor>& pse, int64_t pse_form, int64_t pse_type,
    int64_t q_start, int64_t kv_start, const std::optional<at::Tensor>& drop_mask, double keep_prob,
    const std::optional<at::Tensor>& atten_mask, int64_t mask_form, at::IntArrayRef band_lo, at::IntArrayRef band_hi,
    at::IntArrayRef prefix, bool stats_tnd, int64_t block_q, int64_t block_k) {
  BoundPlan bound;
  bind_plan(bound, query, key, seq_q, seq_kv, scale, pse, pse_form, pse_type, q_start, kv_start, drop_mask, keep_prob,
            atten_mask, mask_form, band_lo, band_hi, prefix, stats_tnd, block_q, block_k);
  const at::Tensor q = query.contiguous(), k = key.contiguous(), v = value.contiguous();
  TORCH_CHECK(k.scalar_type() == q.scalar_type() && v.scalar_type() == q.scalar_type(),
              "flash attention native: query, key and value must share a dtype");
  at::Tensor out = fresh_tensor(query.sizes(), query.options());
  at::Tensor smax = fresh_tensor({query.size(0), query.size(1), 8}, query.options().dtype(at::kFloat));
  at::Tensor ssum = fresh_tensor(smax.sizes(), smax.options());
  ForwardKernel(bound.plan, q.data_ptr(), k.data_ptr(), v.data_ptr(), elem_type(q), out.data_ptr(),
                smax.data_ptr<float>(), ssum.data_ptr<float>())
      .run();
  // rows past the last sequence (T1 > sum of seq_q) are zeros, as in the eager kernel
  const int64_t used = std::accumulate(seq_q.begin(), seq_q.end(), int64_t(0)), tail = query.size(0) - used;
  if (tail > 0)
    for (at::Tensor* t : {&out, &smax, &ssum}) t->narrow(0, used, tail).zero_();
  return {out, smax, ssum};
}

}  // namespace
}  // namespace fa
}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def(
      "flash_attention_fwd(Tensor query, Tensor key, Tensor value, int[] seq_q, int[] seq_kv, float scale, "
      "Tensor? pse, int pse_form, int pse_type, int q_start, int kv_start, Tensor? drop_mask, float keep_prob, "
      "Tensor? atten_mask, int mask_form, int[] band_lo, int[] band_hi, int[] prefix, bool stats_tnd, "
      "int block_q=0, int block_k=0) "
      "-> (Tensor, Tensor, Tensor)");
  m.impl("flash_attention_fwd", c10::DispatchKey::CPU, TORCH_FN(ascend_attn_cpu::fa::flash_attention_fwd));
}
