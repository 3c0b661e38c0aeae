// IncreFlashAttention kernel body, included twice by incre_flash_attention.cpp: once as plain C++
// (namespace isa_scalar, IFA_BODY_AVX2 0) and once under `#pragma GCC target("avx2,fma,f16c")`
// (namespace isa_avx2, IFA_BODY_AVX2 1). The 8-lane vector type V below is __m256 or an array of
// 8 floats with the same operations in the same order (same fused multiply-adds, same horizontal
// sum tree), so both builds give the same bits. No include guard: included on purpose twice.

// ------------------------------------------------------------------ 8 lanes of float32
#if IFA_BODY_AVX2
struct V { __m256 v; };
static inline V vzero() { return {_mm256_setzero_ps()}; }
static inline V vset1(float x) { return {_mm256_set1_ps(x)}; }
static inline V vload(const float* p) { return {_mm256_loadu_ps(p)}; }
// A vector loaded once and used by several FMAs stays in a register: without this GCC folds the
// load into every FMA (one load per FMA), and the load ports, not the FMA units, set the pace.
static inline V vkeep(V a) { __asm__("" : "+x"(a.v)); return a; }
static inline void vstore(float* p, V a) { _mm256_storeu_ps(p, a.v); }
static inline V vfma(V a, V b, V c) { return {_mm256_fmadd_ps(a.v, b.v, c.v)}; }
static inline V vadd(V a, V b) { return {_mm256_add_ps(a.v, b.v)}; }
static inline V vsub(V a, V b) { return {_mm256_sub_ps(a.v, b.v)}; }
static inline V vmaxn(V a, V b) { return {max8_nan(a.v, b.v)}; }
static inline float vsum(V a) { return hsum8(a.v); }
// Lane i = vsum(a[i]) for 8 vectors at once, each sum in vsum's order ((a0+a4) + (a2+a6)) +
// ((a1+a5) + (a3+a7)): a transposing reduction, 21 instructions instead of 8 separate trees.
static inline V vsum8(const V* a) {
  auto halves = [](__m256 x, __m256 y) {  // [x.lo + x.hi | y.lo + y.hi]
    return _mm256_add_ps(_mm256_permute2f128_ps(x, y, 0x20), _mm256_permute2f128_ps(x, y, 0x31));
  };
  auto pairs = [](__m256 x, __m256 y) {  // per 128-bit lane: [x0 + x2, x1 + x3, y0 + y2, y1 + y3]
    return _mm256_add_ps(_mm256_shuffle_ps(x, y, _MM_SHUFFLE(1, 0, 1, 0)),
                         _mm256_shuffle_ps(x, y, _MM_SHUFFLE(3, 2, 3, 2)));
  };
  const __m256 w0 = pairs(halves(a[0].v, a[4].v), halves(a[1].v, a[5].v));
  const __m256 w1 = pairs(halves(a[2].v, a[6].v), halves(a[3].v, a[7].v));
  return {_mm256_add_ps(_mm256_shuffle_ps(w0, w1, _MM_SHUFFLE(2, 0, 2, 0)),
                        _mm256_shuffle_ps(w0, w1, _MM_SHUFFLE(3, 1, 3, 1)))};
}
static inline V vexp(V a) { return {exp8(a.v)}; }
template <ElemType T>
static inline V vload_elem(const void* row, int64_t e) {
  if constexpr (T == ElemType::f16) return {load8_f16(static_cast<const uint16_t*>(row) + e)};
  else if constexpr (T == ElemType::bf16) return {load8_bf16(static_cast<const uint16_t*>(row) + e)};
  else if constexpr (T == ElemType::i8) return {load8_i8(static_cast<const int8_t*>(row) + e)};
  else return {_mm256_loadu_ps(static_cast<const float*>(row) + e)};
}
// P before P.V: fp16 nearest with ties away (HALF_AWAY16), the rounding FA uses too.
static inline V vround_fp16_away(V a) { return {round8_fp16_half_away(a.v)}; }
static inline V vround_bf16(V a) { return {round8_bf16_even(a.v)}; }
#else
struct V { float v[8]; };
static inline V vzero() { V r; for (int i = 0; i < 8; ++i) r.v[i] = 0.0f; return r; }
static inline V vset1(float x) { V r; for (int i = 0; i < 8; ++i) r.v[i] = x; return r; }
static inline V vload(const float* p) { V r; for (int i = 0; i < 8; ++i) r.v[i] = p[i]; return r; }
static inline V vkeep(V a) { return a; }
static inline void vstore(float* p, V a) { for (int i = 0; i < 8; ++i) p[i] = a.v[i]; }
static inline V vfma(V a, V b, V c) {
  V r;
  for (int i = 0; i < 8; ++i) r.v[i] = std::fma(a.v[i], b.v[i], c.v[i]);
  return r;
}
static inline V vadd(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] + b.v[i]; return r; }
static inline V vsub(V a, V b) { V r; for (int i = 0; i < 8; ++i) r.v[i] = a.v[i] - b.v[i]; return r; }
static inline V vmaxn(V a, V b) {
  V r;
  for (int i = 0; i < 8; ++i)
    r.v[i] = (std::isnan(a.v[i]) || std::isnan(b.v[i])) ? a.v[i] + b.v[i] : (a.v[i] > b.v[i] ? a.v[i] : b.v[i]);
  return r;
}
static inline float vsum(V a) {
  float s[4];
  for (int i = 0; i < 4; ++i) s[i] = a.v[i] + a.v[i + 4];
  return (s[0] + s[2]) + (s[1] + s[3]);
}
static inline V vsum8(const V* a) { V r; for (int i = 0; i < 8; ++i) r.v[i] = vsum(a[i]); return r; }
static inline V vexp(V a) { V r; for (int i = 0; i < 8; ++i) r.v[i] = exp_poly(a.v[i]); return r; }
template <ElemType T>
static inline V vload_elem(const void* row, int64_t e) {
  V r;
  for (int i = 0; i < 8; ++i) r.v[i] = load_elem<T>(row, e + i);
  return r;
}
static inline V vround_fp16_away(V a) {
  V r;
  for (int i = 0; i < 8; ++i) r.v[i] = fp16_to_float(float_to_fp16_half_away(a.v[i]));
  return r;
}
static inline V vround_bf16(V a) {
  V r;
  for (int i = 0; i < 8; ++i) r.v[i] = std::isnan(a.v[i]) ? a.v[i] : bf16_to_float(float_to_bf16_rne(a.v[i]));
  return r;
}
#endif

// ------------------------------------------------------------------ prefetch
// The rows of the tile ahead, prefetched a few cache lines at a time between micro-kernel calls: a
// burst of a whole tile's lines fills the miss buffers and stalls the core until they return.
// They go to L2 (prefetcht2), not L1: the tile ahead of every KV head of a unit is as large as L1
// (kTile positions x ng heads x 256 B: 32 KiB at ng = 4 fp16 heads) and evicted the tile in use
// before it was read. Measured interleaved in one process (B=8, Nq=32, D=128, fp16, Zen 3): 8-12 % faster
// than prefetcht0 at 1k and 8k positions, int8 about 2 %; prefetching a tile further ahead did
// not help, and no prefetching at all was 1.5x slower.
struct RowPrefetch {
  const void* const* rows = nullptr;
  int64_t n = 0, lines = 0;  // rows, cache lines per row
  int64_t per_call = 0;      // lines per step: all of them over the expected number of steps
  int64_t row = 0, line = 0;
  void pace(int64_t steps) { per_call = (n * lines + steps - 1) / std::max<int64_t>(1, steps); }
  void step() { step(per_call); }
  void step(int64_t k) {
    for (; k > 0 && row < n; --k) {
      __builtin_prefetch(static_cast<const char*>(rows[row]) + line * 64, /*rw=*/0, /*locality=*/1);
      if (++line == lines) { line = 0; ++row; }
    }
  }
  void rest() { step((n - row) * lines); }
};

// ------------------------------------------------------------------ scores
// s[j*ns + r] = (q_j . k_r + kbias_j) * scale for the group's query heads j and the NT rows r at
// krow (any D: one reduction per (row, head), the D % 8 tail in scalar).
template <ElemType KV, int NH, int NT>
static inline void score_rows(const float* q, int64_t d, const float* kb, float scale, float* s, int64_t ns,
                              const void* const* krow) {
  V acc[NT][NH];  // NT positions x NH heads: independent FMA chains, each q load shared by NT rows
  for (int r = 0; r < NT; ++r)
    for (int j = 0; j < NH; ++j) acc[r][j] = vzero();
  int64_t e = 0;
  for (; e + 8 <= d; e += 8) {
    V kv[NT];
    for (int r = 0; r < NT; ++r) kv[r] = vload_elem<KV>(krow[r], e);
    for (int j = 0; j < NH; ++j) {
      const V qv = vload(q + j * d + e);
      for (int r = 0; r < NT; ++r) acc[r][j] = vfma(qv, kv[r], acc[r][j]);
    }
  }
  for (int r = 0; r < NT; ++r) {
    for (int j = 0; j < NH; ++j) {
      float x = vsum(acc[r][j]);
      for (int64_t e2 = e; e2 < d; ++e2) x += q[j * d + e2] * load_elem<KV>(krow[r], e2);
      s[j * ns + r] = (x + kb[j]) * scale;
    }
  }
}

// The same for NT rows x NH heads with NT * NH = 8 or 12 and D % 8 == 0 (DC: D fixed at compile
// time, 0 = run time): the K vectors of a row are converted once per NH heads, each q vector is
// loaded once for NT rows, and the sums are transposing reductions of 8 accumulators (the last 4 of
// 12 reduced with a copy of themselves). 12 accumulators (3 rows x 4 heads) give the FMA chains
// enough slack over the FMA latency and fewer loads per FMA than 8 (2 rows x 4 heads).
template <ElemType KV, int NT, int NH, int DC>
static inline void score_rows8(const float* q, int64_t d_rt, const float* kb, float scale, float* s, int64_t ns,
                               const void* const* krow) {
  static_assert(NT * NH == 8 || NT * NH == 12, "reductions of 8 accumulators");
  constexpr int NA = NT * NH;
  const int64_t d = DC ? DC : d_rt;
  V acc[NA == 8 ? 8 : 16];
  for (int i = 0; i < NA; ++i) acc[i] = vzero();
  for (int64_t e = 0; e < d; e += 8) {
    V kv[NT];
    for (int r = 0; r < NT; ++r) kv[r] = vload_elem<KV>(krow[r], e);
    for (int j = 0; j < NH; ++j) {
      const V qv = NT > 1 ? vkeep(vload(q + j * d + e)) : vload(q + j * d + e);
      for (int r = 0; r < NT; ++r) acc[r * NH + j] = vfma(qv, kv[r], acc[r * NH + j]);
    }
  }
  float x[16];
  vstore(x, vsum8(acc));
  if constexpr (NA == 12) {
    for (int i = 12; i < 16; ++i) acc[i] = acc[i - 4];
    vstore(x + 8, vsum8(acc + 8));
  }
  for (int r = 0; r < NT; ++r)
    for (int j = 0; j < NH; ++j) s[j * ns + r] = (x[r * NH + j] + kb[j]) * scale;
}

// Heads [0, NH) of the nt rows of one tile (q, kb, s offset to the first head / row): blocks of 3
// rows for 4 heads, then of 8 / NH rows.
template <ElemType KV, int NH, int DC>
static void score_heads(const float* q, int64_t d, const float* kb, float scale, float* s, int64_t ns,
                        const void* const* rows, int64_t nt, RowPrefetch& pf) {
  constexpr int NT = 8 / NH;
  int64_t t = 0;
  if (d % 8 == 0) {
    if constexpr (NH == 4)
      for (; t + 3 <= nt; t += 3) {
        score_rows8<KV, 3, NH, DC>(q, d, kb, scale, s + t, ns, rows + t);
        pf.step();
      }
    for (; t + NT <= nt; t += NT) {
      score_rows8<KV, NT, NH, DC>(q, d, kb, scale, s + t, ns, rows + t);
      pf.step();
    }
  }
  for (; t + 2 <= nt; t += 2) score_rows<KV, NH, 2>(q, d, kb, scale, s + t, ns, rows + t);
  for (; t < nt; ++t) score_rows<KV, NH, 1>(q, d, kb, scale, s + t, ns, rows + t);
}

// score_rows8 calls of score_heads for nt rows (prefetch pacing), for every head block of g heads.
static inline int64_t score_blocks(int64_t g, int64_t nt) {
  const int64_t b4 = g / 4, b2 = g % 4 / 2, b1 = g % 2;
  return std::max<int64_t>(1, b4 * (nt / 3 + nt % 3 / 2) + b2 * (nt / 4) + b1 * (nt / 8));
}

// Every head of a group over the nt rows of one tile: blocks of 4, 2 and 1 heads.
template <ElemType KV, int DC>
static void score_tile_d(int64_t g, const float* qf, int64_t d, const float* kbias, float scale, float* s, int64_t ns,
                         const void* const* rows, int64_t nt, RowPrefetch& pf) {
  int64_t j0 = 0;
  for (; j0 + 4 <= g; j0 += 4) score_heads<KV, 4, DC>(qf + j0 * d, d, kbias + j0, scale, s + j0 * ns, ns, rows, nt, pf);
  for (; j0 + 2 <= g; j0 += 2) score_heads<KV, 2, DC>(qf + j0 * d, d, kbias + j0, scale, s + j0 * ns, ns, rows, nt, pf);
  for (; j0 < g; ++j0) score_heads<KV, 1, DC>(qf + j0 * d, d, kbias + j0, scale, s + j0 * ns, ns, rows, nt, pf);
}

template <ElemType KV>
static void score_tile(int64_t g, const float* qf, int64_t d, const float* kbias, float scale, float* s, int64_t ns,
                       const void* const* rows, int64_t nt, RowPrefetch& pf) {
  if (d == 128) score_tile_d<KV, 128>(g, qf, d, kbias, scale, s, ns, rows, nt, pf);
  else score_tile_d<KV, 0>(g, qf, d, kbias, scale, s, ns, rows, nt, pf);
}

// ------------------------------------------------------------------ P.V
// acc[j*D + e] += P[j][t] * v_t[e] over the live rows t of one tile, t in increasing order.
// AllLive: every row of the tile is live (no mask), the per-row test is compiled out.
template <ElemType KV, int NH, int NE, bool AllLive>
static inline void pv_cols(const float* pm, int64_t ns, const uint8_t* live, const void* const* rows, int64_t nt,
                           int64_t d, int64_t e, float* acc) {
  V a[NH][NE];  // NH heads x NE column vectors: independent FMA chains over the rows
  for (int j = 0; j < NH; ++j)
    for (int c = 0; c < NE; ++c) a[j][c] = vload(acc + j * d + e + 8 * c);
  for (int64_t t = 0; t < nt; ++t) {
    if (!AllLive && !live[t]) continue;
    V vv[NE];
    for (int c = 0; c < NE; ++c) vv[c] = vload_elem<KV>(rows[t], e + 8 * c);
    for (int j = 0; j < NH; ++j) {
      const V pj = vset1(pm[j * ns + t]);
      for (int c = 0; c < NE; ++c) a[j][c] = vfma(pj, vv[c], a[j][c]);
    }
  }
  for (int j = 0; j < NH; ++j)
    for (int c = 0; c < NE; ++c) vstore(acc + j * d + e + 8 * c, a[j][c]);
}

// Column vectors of the next pv_cols call when rem vectors of a row are left: 3 while that leaves
// none or at least 2 (NH = 4 heads x 3 vectors: 12 accumulators, 7 loads per 12 FMAs), else 2, 1.
static inline int64_t pv_step(int64_t rem) { return rem >= 5 || rem == 3 ? 3 : rem >= 2 ? 2 : 1; }

// pv_cols calls of one head block over a row of d elements (prefetch pacing).
static inline int64_t pv_blocks(int64_t d) {
  int64_t n = 0;
  for (int64_t rem = d / 8; rem > 0; rem -= pv_step(rem)) ++n;
  return std::max<int64_t>(1, n);
}

// Heads j0 .. j0 + NH of the rows of one tile; pm, live and acc already offset to head j0 / the tile's
// first row.
template <ElemType KV, int NH, bool AllLive>
static void pv_block(const float* pm, int64_t ns, const uint8_t* live, const void* const* rows, int64_t nt, int64_t d,
                     float* acc, RowPrefetch& pf) {
  int64_t e = 0;
  for (int64_t rem = d / 8; rem > 0;) {
    const int64_t ne = pv_step(rem);
    if (ne == 3) pv_cols<KV, NH, 3, AllLive>(pm, ns, live, rows, nt, d, e, acc);
    else if (ne == 2) pv_cols<KV, NH, 2, AllLive>(pm, ns, live, rows, nt, d, e, acc);
    else pv_cols<KV, NH, 1, AllLive>(pm, ns, live, rows, nt, d, e, acc);
    pf.step();
    e += 8 * ne;
    rem -= ne;
  }
  for (; e < d; ++e) {
    for (int64_t t = 0; t < nt; ++t) {
      if (!AllLive && !live[t]) continue;
      float x = load_elem<KV>(rows[t], e);
      for (int j = 0; j < NH; ++j) acc[j * d + e] += pm[j * ns + t] * x;
    }
  }
}

template <ElemType KV, bool AllLive>
static void pv_tile(int64_t g, const float* pm, int64_t ns, const uint8_t* live, const void* const* rows, int64_t nt,
                    int64_t d, float* acc, RowPrefetch& pf) {
  int64_t j0 = 0;
  for (; j0 + 4 <= g; j0 += 4) pv_block<KV, 4, AllLive>(pm + j0 * ns, ns, live, rows, nt, d, acc + j0 * d, pf);
  for (; j0 + 2 <= g; j0 += 2) pv_block<KV, 2, AllLive>(pm + j0 * ns, ns, live, rows, nt, d, acc + j0 * d, pf);
  for (; j0 < g; ++j0) pv_block<KV, 1, AllLive>(pm + j0 * ns, ns, live, rows, nt, d, acc + j0 * d, pf);
}

// ------------------------------------------------------------------ one work unit, float dataflow (§7.3, §7.4)
// A unit is ng items of one batch and chunk with consecutive KV heads. Their rows are visited tile
// by tile, all heads of a tile together: in BSH/BSND (and paged BSH) caches the heads of a
// position are adjacent, so the unit reads the cache in memory order. While head gi of a tile is
// processed, the rows of head gi of the next tile are prefetched.
constexpr int64_t kTile = 32;

// Row pointers of positions [t0, t1) for the ng heads of a unit (row gi*kTile + t - t0): the items
// share batch and chunk, so a position's offset (one page lookup) serves every head.
template <ElemType KV>
static void tile_rows(const Plan& p, const Item* its, int64_t ng, bool key, int64_t t0, int64_t t1,
                      const void** rows) {
  const int64_t b = its[0].b, ts = p.t_stride[b], gs = p.g_stride[b];
  const char* base = static_cast<const char*>(key ? p.k_base[b] : p.v_base[b]);
  constexpr int64_t es = KV == ElemType::f32 ? 4 : KV == ElemType::i8 ? 1 : 2;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t pos = p.paged ? p.block_table[b * p.table_stride + t / p.block_size] * p.page_stride +
                                      (t % p.block_size) * ts
                                : t * ts;
    for (int64_t gi = 0; gi < ng; ++gi) rows[gi * kTile + t - t0] = base + (pos + its[gi].g * gs) * es;
  }
}

// body(gi, rows of head gi, t0, t1) for every tile [t0, t1) of the unit's chunk and head gi;
// rows holds 2 * ng * kTile pointers (this tile's and the next one's).
template <ElemType KV, class Body>
static void for_each_tile(const Plan& p, const Item* its, int64_t ng, bool key, const void** rows, Body&& body) {
  const int64_t c0 = its[0].c0, c1 = its[0].c1, bytes = p.head_dim * elem_size(KV);
  const void** cur = rows;
  const void** ahead = rows + ng * kTile;
  tile_rows<KV>(p, its, ng, key, c0, std::min(c1, c0 + kTile), cur);
  for (int64_t t0 = c0; t0 < c1; t0 += kTile) {
    const int64_t t1 = std::min(c1, t0 + kTile), a1 = std::min(c1, t1 + kTile);
    if (t1 < a1) tile_rows<KV>(p, its, ng, key, t1, a1, ahead);
    for (int64_t gi = 0; gi < ng; ++gi) {
      RowPrefetch pf;
      pf.rows = ahead + gi * kTile;
      pf.n = a1 - t1;
      pf.lines = (bytes + 63) / 64;
      body(gi, cur + gi * kTile, t0, t1, pf);
      pf.rest();
    }
    std::swap(cur, ahead);
  }
}

// Scores of every group of a unit, multiplied by scale; per group gi the scratch block at gi*blk
// holds qf [G, D], kbias [G] and the scores [G, ns].
template <ElemType KV>
static void unit_scores(const Plan& p, const Item* its, int64_t ng, float* scratch, int64_t blk, int64_t ns,
                        float scale, const void** rows) {
  const int64_t g = p.group, d = p.head_dim, c0 = its[0].c0;
  for_each_tile<KV>(p, its, ng, true, rows, [&](int64_t gi, const void* const* r, int64_t t0, int64_t t1,
                                                RowPrefetch& pf) {
    const float* qf = scratch + gi * blk;
    const float* kb = qf + g * d;
    pf.pace(score_blocks(g, t1 - t0));
    score_tile<KV>(g, qf, d, kb, scale, scratch + gi * blk + g * d + g + (t0 - c0), ns, r, t1 - t0, pf);
  });
}

// P.V of every group of a unit, tile by tile: P of group gi at p_of(gi) ([G, ns]), live rows at live_of(gi).
template <ElemType KV, class POf, class LiveOf>
static void unit_pv(const Plan& p, const Item* its, int64_t ng, PartialView* outs, int64_t ns, POf p_of,
                    LiveOf live_of, const void** rows) {
  const int64_t g = p.group, c0 = its[0].c0;
  for_each_tile<KV>(p, its, ng, false, rows, [&](int64_t gi, const void* const* r, int64_t t0, int64_t t1,
                                                 RowPrefetch& pf) {
    const float* pm = p_of(gi) + (t0 - c0);
    const uint8_t* live = live_of(gi) + (t0 - c0);
    bool all_live = true;
    for (int64_t t = 0; t < t1 - t0 && all_live; ++t) all_live = live[t] != 0;
    pf.pace((g + 3) / 4 * pv_blocks(p.head_dim));  // pv_cols calls of this tile
    if (all_live) pv_tile<KV, true>(g, pm, ns, live, r, t1 - t0, p.head_dim, outs[gi].acc, pf);
    else pv_tile<KV, false>(g, pm, ns, live, r, t1 - t0, p.head_dim, outs[gi].acc, pf);
  });
}

template <ElemType KV>
static void float_unit(const Plan& p, const Item* its, int64_t ng, PartialView* outs, std::vector<float>& scratch,
                       std::vector<const void*>& rows) {
  const int64_t g = p.group, d = p.head_dim, b = its[0].b, c0 = its[0].c0, c1 = its[0].c1;
  const int64_t n = c1 - c0, ns = (n + 7) / 8 * 8, blk = g * d + g + g * ns + ns;
  scratch.resize(static_cast<size_t>(ng * blk));
  rows.resize(static_cast<size_t>(2 * ng * kTile));
  auto qf_of = [&](int64_t gi) { return scratch.data() + gi * blk; };
  auto kbias_of = [&](int64_t gi) { return qf_of(gi) + g * d; };
  auto s_of = [&](int64_t gi) { return kbias_of(gi) + g; };
  auto live_of = [&](int64_t gi) { return reinterpret_cast<uint8_t*>(s_of(gi) + g * ns); };
  // query rows of each group in float32; antiquant folds the key scale into q and the key offset
  // into a per-head bias: q.((k8 + o) * sc) = (q * sc).k8 + (q * sc).o
  for (int64_t gi = 0; gi < ng; ++gi) {
    const int64_t kvh = its[gi].g;
    float* qf = qf_of(gi);
    for (int64_t j = 0; j < g; ++j) {
      const int64_t h = kvh * g + j;
      float* qj = qf + j * d;
      load_row(p.query, p.q_type, (b * p.heads_q + h) * d, d, qj);
      if (p.aq_scale)
        for (int64_t e = 0; e < d; ++e) qj[e] *= p.aq_scale[p.aq_channel ? kvh * d + e : 0];
      float bias = 0.0f;
      if (p.aq_offset)
        for (int64_t e = 0; e < d; ++e) bias += qj[e] * p.aq_offset[p.aq_channel ? kvh * d + e : 0];
      kbias_of(gi)[j] = bias;
    }
  }
  unit_scores<KV>(p, its, ng, scratch.data(), blk, ns, p.scale, rows.data());
  for (int64_t gi = 0; gi < ng; ++gi) {
    const int64_t kvh = its[gi].g;
    float* s = s_of(gi);
    uint8_t* live = live_of(gi);
    const PartialView& out = outs[gi];
    // pse and mask on the scaled scores; kept counts and live positions
    for (int64_t t = 0; t < ns; ++t) live[t] = 0;
    for (int64_t j = 0; j < g; ++j) {
      const int64_t h = kvh * g + j;
      float* sj = s + j * ns;
      const uint8_t* mrow = p.mask ? p.mask + b * p.mask_b + h * p.mask_h : nullptr;
      const int64_t pse_row = b * p.pse_b + h * p.pse_h;
      int64_t kept = 0;
      if (!p.pse && !mrow) {  // the common decode step: every position kept
        kept = n;
        if (j == 0) std::memset(live, 1, static_cast<size_t>(n));
      }
      for (int64_t t = 0; t < n && (p.pse || mrow); ++t) {
        float x = sj[t];
        if (p.pse) x += load_elem_rt(p.pse_type, p.pse, pse_row + c0 + t);
        if (mrow && mrow[c0 + t]) x = -INFINITY;
        else { ++kept; live[t] = 1; }
        sj[t] = x;
      }
      for (int64_t t = n; t < ns; ++t) sj[t] = -INFINITY;
      out.kept[j] = static_cast<float>(kept);
    }
    // softmax pieces per head, relative to this item's maximum; P rounded to the query dtype
    for (int64_t j = 0; j < g; ++j) {
      float* sj = s + j * ns;
      V mv = vset1(-INFINITY);
      for (int64_t t = 0; t < ns; t += 8) mv = vmaxn(mv, vload(sj + t));
      float mbuf[8];
      vstore(mbuf, mv);
      float m = mbuf[0];
      for (int i = 1; i < 8; ++i) m = (std::isnan(m) || std::isnan(mbuf[i])) ? m + mbuf[i] : std::max(m, mbuf[i]);
      out.m[j] = m;
      if (m == -INFINITY) {  // nothing kept (or every kept score is -inf): contributes nothing
        out.l[j] = out.psum[j] = 0.0f;
        for (int64_t t = 0; t < ns; ++t) sj[t] = 0.0f;
        continue;
      }
      V lv = vzero(), pv_sum = vzero();
      const V mvec = vset1(m);
      for (int64_t t = 0; t < ns; t += 8) {
        V e = vexp(vsub(vload(sj + t), mvec));
        lv = vadd(lv, e);
        if (p.q_type == ElemType::f16) e = vround_fp16_away(e);
        else if (p.q_type == ElemType::bf16) e = vround_bf16(e);
        pv_sum = vadd(pv_sum, e);
        vstore(sj + t, e);
      }
      out.l[j] = vsum(lv);
      out.psum[j] = vsum(pv_sum);
    }
    for (int64_t i = 0; i < g * d; ++i) out.acc[i] = 0.0f;
  }
  unit_pv<KV>(p, its, ng, outs, ns, s_of, live_of, rows.data());
}

static void process_unit(const Plan& p, const Item* its, int64_t ng, PartialView* outs, std::vector<float>& scratch,
                         std::vector<const void*>& rows) {
  switch (p.kv_type) {
    case ElemType::f16: float_unit<ElemType::f16>(p, its, ng, outs, scratch, rows); break;
    case ElemType::bf16: float_unit<ElemType::bf16>(p, its, ng, outs, scratch, rows); break;
    case ElemType::i8: float_unit<ElemType::i8>(p, its, ng, outs, scratch, rows); break;
    default: float_unit<ElemType::f32>(p, its, ng, outs, scratch, rows);
  }
}

// ------------------------------------------------------------------ full int8 (scenarios A/B, §7.5)
// Pass 1 of a unit: exact int32 scores q8.k8 (fp32 FMAs of integers below 2^24 are exact), then
//   sh = fp16(si * deq1); sh = fp16(sh * fp16(scale)); sh = fp16(sh + pse)   (pse sum exact in double)
// into sh_rows (row (b, h) at sh_base[b] + h*len_b), the item maximum over kept positions in m,
// kept counts in kept. Pass 2 (after the row maxima M are known): eh = fp16(exp(sh - M)),
// l = exact sum of eh (double), p8 = int8_sat(rne(fp16(eh * fp16(qs1)))), oi = sum p8 * v8 exact.
static void int8_scores_unit(const Plan& p, const Item* its, int64_t ng, PartialView* outs, float* sh_rows,
                             const int64_t* sh_base, std::vector<float>& scratch, std::vector<const void*>& rows) {
  constexpr ElemType KV = ElemType::i8;
  const int64_t g = p.group, d = p.head_dim, b = its[0].b, c0 = its[0].c0, c1 = its[0].c1;
  const int64_t n = c1 - c0, ns = (n + 7) / 8 * 8, blk = g * d + g + g * ns;
  const int64_t len = p.ends[b] - p.starts[b];
  const float scale16 = fp16_to_float(float_to_fp16_rne(p.scale));
  scratch.resize(static_cast<size_t>(ng * blk));
  rows.resize(static_cast<size_t>(2 * ng * kTile));
  for (int64_t gi = 0; gi < ng; ++gi) {
    float* qf = scratch.data() + gi * blk;
    for (int64_t j = 0; j < g; ++j) {
      const int64_t h = its[gi].g * g + j;
      for (int64_t e = 0; e < d; ++e) qf[j * d + e] = load_elem<KV>(p.query, (b * p.heads_q + h) * d + e);
      qf[g * d + j] = 0.0f;
    }
  }
  unit_scores<KV>(p, its, ng, scratch.data(), blk, ns, 1.0f, rows.data());
  for (int64_t gi = 0; gi < ng; ++gi) {
    const float* s = scratch.data() + gi * blk + g * d + g;
    for (int64_t j = 0; j < g; ++j) {
      const int64_t h = its[gi].g * g + j;
      const uint8_t* mrow = p.mask ? p.mask + b * p.mask_b + h * p.mask_h : nullptr;
      const int64_t pse_row = b * p.pse_b + h * p.pse_h;
      float* out_row = sh_rows + sh_base[b] + h * len + (c0 - p.starts[b]);
      float m = -INFINITY;
      int64_t kept = 0;
      for (int64_t t = 0; t < n; ++t) {
        float x = fp16_to_float(float_to_fp16_rne(s[j * ns + t] * p.deq1));
        x = fp16_to_float(float_to_fp16_rne(x * scale16));
        if (p.pse) x = fp16_rne_of_double(static_cast<double>(x) + load_elem_rt(p.pse_type, p.pse, pse_row + c0 + t));
        out_row[t] = x;
        if (mrow && mrow[c0 + t]) continue;
        ++kept;
        m = (std::isnan(m) || std::isnan(x)) ? m + x : std::max(m, x);
      }
      outs[gi].m[j] = m;
      outs[gi].kept[j] = static_cast<float>(kept);
    }
  }
}

static void int8_pv_unit(const Plan& p, const Item* its, int64_t ng, PartialView* outs, const float* row_max,
                         double* l_parts, const float* sh_rows, const int64_t* sh_base, std::vector<float>& scratch,
                         std::vector<const void*>& rows) {
  constexpr ElemType KV = ElemType::i8;
  const int64_t g = p.group, d = p.head_dim, b = its[0].b, c0 = its[0].c0, c1 = its[0].c1;
  const int64_t n = c1 - c0, ns = (n + 7) / 8 * 8, blk = g * ns + ns;
  const int64_t len = p.ends[b] - p.starts[b];
  const float qs1_16 = fp16_to_float(float_to_fp16_rne(p.qs1));
  scratch.resize(static_cast<size_t>(ng * blk));
  rows.resize(static_cast<size_t>(2 * ng * kTile));
  for (int64_t gi = 0; gi < ng; ++gi) {
    float* p8 = scratch.data() + gi * blk;
    uint8_t* live = reinterpret_cast<uint8_t*>(p8 + g * ns);
    for (int64_t t = 0; t < ns; ++t) live[t] = 0;
    for (int64_t j = 0; j < g; ++j) {
      const int64_t h = its[gi].g * g + j;
      const uint8_t* mrow = p.mask ? p.mask + b * p.mask_b + h * p.mask_h : nullptr;
      const float* sh = sh_rows + sh_base[b] + h * len + (c0 - p.starts[b]);
      const float m = row_max[b * p.heads_q + h];
      double l = 0.0;
      for (int64_t t = 0; t < n; ++t) {
        float q8 = 0.0f;
        if (!(mrow && mrow[c0 + t]) && m != -INFINITY) {
          const float eh = fp16_to_float(float_to_fp16_rne(exp_poly(sh[t] - m)));
          l += eh;  // multiples of 2^-24 below 1: the double sum is exact
          q8 = std::nearbyint(fp16_to_float(float_to_fp16_rne(eh * qs1_16)));
          q8 = std::isnan(q8) ? 0.0f : std::min(127.0f, std::max(-128.0f, q8));
          live[t] = 1;
        }
        p8[j * ns + t] = q8;
      }
      for (int64_t t = n; t < ns; ++t) p8[j * ns + t] = 0.0f;
      l_parts[gi * g + j] = l;
    }
    for (int64_t i = 0; i < g * d; ++i) outs[gi].acc[i] = 0.0f;
  }
  auto p8_of = [&](int64_t gi) { return scratch.data() + gi * blk; };
  auto live_of = [&](int64_t gi) { return reinterpret_cast<const uint8_t*>(p8_of(gi) + g * ns); };
  unit_pv<KV>(p, its, ng, outs, ns, p8_of, live_of, rows.data());
}
