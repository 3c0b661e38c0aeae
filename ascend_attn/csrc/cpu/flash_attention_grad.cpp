// FlashAttentionUnpaddingScoreGrad V4 on CPU (semantics.md §3): P recomputed tile by tile from the
// given statistics. Core: GradKernel (plain pointers); binding at the bottom.
//
// Work items are (sequence, kv head): one thread owns the dK / dV rows of its item and walks the
// query blocks in order, so every sum is formed in the same order for any thread count (the CPU
// path is bitwise deterministic, §3).
#include <torch/library.h>

#include "flash_attention_binding.h"

namespace ascend_attn_cpu {
namespace fa {
namespace {

struct GradItem {
  int64_t seq, n2;
};

// One thread's tiles: rows = block_q * G query rows, block_k key columns. Q * scale and dO (rows
// of ld) are B operands of dK / dV (gemm.h), as are K^T, V^T and K of the item's head.
struct GradTiles {
  std::vector<float> qt, dot, dq, probs, dprobs, drop, m, l, delta;
  std::vector<uint8_t> keep;
  int64_t ld, prob_ld;  // row strides of the Q / dO tiles and of the P / dP tiles
  HeadLayout kt, vt, k;
  explicit GradTiles(const Plan& p)
      : ld(padded_ld(p.head_dim)), prob_ld(padded_ld(p.block_k)), kt(p, /*transposed=*/true),
        vt(p, /*transposed=*/true), k(p, /*transposed=*/false) {
    const int64_t rows = p.block_q * p.group(), d = p.head_dim;
    qt.assign(rows * ld, 0.f);
    dot.assign(rows * ld, 0.f);
    dq.assign(rows * d, 0.f);
    probs.assign(rows * prob_ld, 0.f);
    dprobs.assign(rows * prob_ld, 0.f);
    keep.assign(p.block_q * p.block_k, 0);
    drop.assign(p.block_k, 0.f);
    m.assign(rows, 0.f);
    l.assign(rows, 0.f);
    delta.assign(rows, 0.f);
  }
};

class GradKernel {
 public:
  // q, dy, attention_in [T1, N1, D], stats [T1, N1, 8]: float32 contiguous; k / v [T2, N2, D]
  // contiguous of kv_type. dq [T1, N1, D], dk / dv [T2, N2, D]: float32 zeros, receive values on the
  // dtype's grid.
  GradKernel(const Plan& p, const float* q, const void* k, const void* v, ElemType kv_type, const float* dy,
             const float* smax, const float* ssum, const float* oin, float* dq, float* dk, float* dv)
      : p_(p), q_(q), k_(k), v_(v), kv_type_(kv_type), dy_(dy), smax_(smax), ssum_(ssum), oin_(oin), dq_(dq), dk_(dk),
        dv_(dv),
        seqs_(sequences(p)), ops_(row_ops()) {
    for (const Sequence& s : seqs_) {
      if (s.s1 == 0 || s.s2 == 0) continue;
      for (int64_t n2 = 0; n2 < p.heads_kv; ++n2) items_.push_back({s.b, n2});
    }
  }

  void run() {
    run_items<GradTiles>(p_, items_, [this](const GradItem& item, GradTiles& t) { Process(item, t); });
  }

 private:
  void Process(const GradItem& item, GradTiles& t) {
    const Sequence& s = seqs_[item.seq];
    t.kt.load(s, item.n2, k_, kv_type_);
    t.vt.load(s, item.n2, v_, kv_type_);
    t.k.load(s, item.n2, k_, kv_type_);
    for (int64_t i0 = 0; i0 < s.s1; i0 += p_.block_q) {
      const int64_t i1 = std::min(s.s1, i0 + p_.block_q);
      CopyIn(s, item.n2, i0, i1, t);
      for (int64_t j0 = 0; j0 < s.s2; j0 += p_.block_k) {
        int64_t c0 = j0, c1 = std::min(s.s2, j0 + p_.block_k);
        const BlockKeep kind = keep_block(p_, s, i0, i1, c0, c1, t.keep.data());
        if (kind == BlockKeep::kNone) continue;
        Compute(s, item.n2, i0, i1, c0, c1, kind == BlockKeep::kPartial, t);
      }
      CopyOutDq(s, item.n2, i0, i1, t);
    }
    const int64_t d = p_.head_dim, kv_ld = p_.heads_kv * d;
    for (int64_t j = 0; j < s.s2; ++j) {  // dk, dv rows of this item onto the dtype's grid
      const int64_t off = (s.ok + j) * kv_ld + item.n2 * d;
      ops_.round(dk_ + off, d, p_.round);
      ops_.round(dv_ + off, d, p_.round);
    }
  }

  // Q * scale, dO, statistics (lane 0) and D = rowsum(dO * attention_in) of one query block.
  void CopyIn(const Sequence& s, int64_t n2, int64_t i0, int64_t i1, GradTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, rows = (i1 - i0) * g_size;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / g_size, h = n2 * g_size + r % g_size;
      const int64_t off = ((s.oq + i) * p_.heads_q + h) * d;
      float* qd = t.qt.data() + r * t.ld;
      for (int64_t c = 0; c < d; ++c) qd[c] = q_[off + c] * p_.scale;
      std::copy(dy_ + off, dy_ + off + d, t.dot.data() + r * t.ld);
      t.delta[r] = ops_.dot(dy_ + off, oin_ + off, d);
      const int64_t so = stats_offset(p_, s, i, h);
      t.m[r] = smax_[so];
      t.l[r] = ssum_[so];
    }
    std::fill(t.dq.begin(), t.dq.begin() + rows * d, 0.f);
  }

  // One tile: P = exp(z - m) / l, dP = dO V^T, dS = round((dP * drop - D) * P), Pd = round(P * drop);
  // dQ += dS K, dK += dS^T (Q * scale), dV += Pd^T dO. A partly kept tile band by band, each on
  // the columns its rows can keep.
  void Compute(const Sequence& s, int64_t n2, int64_t i0, int64_t i1, int64_t j0, int64_t j1, bool partial,
               GradTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, ld = t.prob_ld, kv_ld = p_.heads_kv * d;
    for_each_row_band(p_, s, i0, i1, j0, j1, partial, [&](int64_t a, int64_t b, int64_t c0, int64_t c1) {
      const int64_t r0 = (a - i0) * g_size, rows = (b - a) * g_size, cols = c1 - c0;
      const int64_t kv_off = ((s.ok + c0) * p_.heads_kv + n2) * d;
      const float *qt = t.qt.data() + r0 * t.ld, *dot = t.dot.data() + r0 * t.ld;
      float *probs = t.probs.data() + r0 * ld, *dprobs = t.dprobs.data() + r0 * ld;
      gemm(rows, cols, d, qt, t.ld, 1, t.kt.at(c0), t.kt.ld(), probs, ld, false);
      gemm(rows, cols, d, dot, t.ld, 1, t.vt.at(c0), t.vt.ld(), dprobs, ld, false);
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t il = (r0 + r) / g_size, i = i0 + il, h = n2 * g_size + (r0 + r) % g_size;
        float *pr = probs + r * ld, *dp = dprobs + r * ld;
        add_pse_row(p_, s, h, i, c0, c1, pr);
        ops_.exp_div(pr, cols, t.m[r0 + r], t.l[r0 + r]);
        if (partial && p_.mask_form == MaskForm::kNone) {  // masked positions are exactly 0
          fill_outside_band(p_, s, i, c0, c1, pr, 0.f);
        } else if (partial) {
          const uint8_t* keep = t.keep.data() + il * (j1 - j0) + (c0 - j0);
          for (int64_t c = 0; c < cols; ++c)
            if (!keep[c]) pr[c] = 0.f;
        }
        const float delta = t.delta[r0 + r];
        if (p_.drop_mask) {
          dropout_row(p_, s, h, i, c0, c1, t.drop.data());
          const float* f = t.drop.data();
          for (int64_t c = 0; c < cols; ++c) {
            dp[c] = (dp[c] * f[c] - delta) * pr[c];
            pr[c] *= f[c];
          }
        } else {
          for (int64_t c = 0; c < cols; ++c) dp[c] = (dp[c] - delta) * pr[c];
        }
        ops_.round(dp, cols, p_.round);
        ops_.round(pr, cols, p_.round);
      }
      gemm(rows, d, cols, dprobs, ld, 1, t.k.at(c0), t.k.ld(), t.dq.data() + r0 * d, d, true);
      gemm(cols, d, rows, dprobs, 1, ld, qt, t.ld, dk_ + kv_off, kv_ld, true);  // dS^T: A read transposed
      gemm(cols, d, rows, probs, 1, ld, dot, t.ld, dv_ + kv_off, kv_ld, true);
    });
  }

  // dq = round((dS K) * scale): the scale after the product, as the kernel does.
  void CopyOutDq(const Sequence& s, int64_t n2, int64_t i0, int64_t i1, GradTiles& t) {
    const int64_t g_size = p_.group(), d = p_.head_dim, rows = (i1 - i0) * g_size;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = i0 + r / g_size, h = n2 * g_size + r % g_size;
      float* dst = dq_ + ((s.oq + i) * p_.heads_q + h) * d;
      const float* src = t.dq.data() + r * d;
      for (int64_t c = 0; c < d; ++c) dst[c] = src[c] * p_.scale;
      ops_.round(dst, d, p_.round);
    }
  }

  const Plan& p_;
  const float* q_;
  const void *k_, *v_;
  ElemType kv_type_;
  const float *dy_, *smax_, *ssum_, *oin_;
  float *dq_, *dk_, *dv_;
  std::vector<Sequence> seqs_;
  const RowOps& ops_;
  std::vector<GradItem> items_;
};

std::tuple<at::Tensor, at::Tensor, at::Tensor> flash_attention_grad(
    const at::Tensor& query, const at::Tensor& key, const at::Tensor& value, const at::Tensor& dy,
    const at::Tensor& softmax_max, const at::Tensor& softmax_sum, const at::Tensor& attention_in,
    at::IntArrayRef seq_q, at::IntArrayRef seq_kv, double scale, const std::optional<at::Tensor>& pse,
    int64_t pse_form, int64_t pse_type, int64_t q_start, int64_t kv_start, const std::optional<at::Tensor>& drop_mask,
    double keep_prob, const std::optional<at::Tensor>& atten_mask, int64_t mask_form, at::IntArrayRef band_lo,
    at::IntArrayRef band_hi, at::IntArrayRef prefix, bool stats_tnd, int64_t block_q, int64_t block_k) {
  BoundPlan bound;
  bind_plan(bound, query, key, seq_q, seq_kv, scale, pse, pse_form, pse_type, q_start, kv_start, drop_mask, keep_prob,
            atten_mask, mask_form, band_lo, band_hi, prefix, stats_tnd, block_q, block_k);
  const at::Tensor q = as_f32(query), k = key.contiguous(), v = value.contiguous(), g = as_f32(dy);
  TORCH_CHECK(v.scalar_type() == k.scalar_type(), "flash attention native: key and value must share a dtype");
  const at::Tensor oin = as_f32(attention_in), smax = as_f32(softmax_max), ssum = as_f32(softmax_sum);
  const auto f32 = query.options().dtype(at::kFloat);
  at::Tensor dq = fresh_tensor(query.sizes(), f32, /*zero=*/true), dk = fresh_tensor(key.sizes(), f32, /*zero=*/true),
             dv = fresh_tensor(value.sizes(), f32, /*zero=*/true);
  GradKernel(bound.plan, q.data_ptr<float>(), k.data_ptr(), v.data_ptr(), elem_type(k), g.data_ptr<float>(),
             smax.data_ptr<float>(), ssum.data_ptr<float>(), oin.data_ptr<float>(), dq.data_ptr<float>(),
             dk.data_ptr<float>(), dv.data_ptr<float>())
      .run();
  const auto dtype = query.scalar_type();
  return {narrow_exact(dq, dtype), narrow_exact(dk, dtype), narrow_exact(dv, dtype)};
}

}  // namespace
}  // namespace fa
}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def(
      "flash_attention_grad(Tensor query, Tensor key, Tensor value, Tensor dy, Tensor softmax_max, "
      "Tensor softmax_sum, Tensor attention_in, int[] seq_q, int[] seq_kv, float scale, Tensor? pse, int pse_form, "
      "int pse_type, int q_start, int kv_start, Tensor? drop_mask, float keep_prob, Tensor? atten_mask, "
      "int mask_form, int[] band_lo, int[] band_hi, int[] prefix, bool stats_tnd, int block_q=0, int block_k=0) "
      "-> (Tensor, Tensor, Tensor)");
  m.impl("flash_attention_grad", c10::DispatchKey::CPU, TORCH_FN(ascend_attn_cpu::fa::flash_attention_grad));
}
