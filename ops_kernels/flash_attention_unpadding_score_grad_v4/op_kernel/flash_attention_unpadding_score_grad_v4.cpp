/*
 * FlashAttentionUnpaddingScoreGradV4 kernel (TND), AscendC, vector-driven MIX kernel using the
 * Matmul high-level API (the vector core issues the cube work, as CANN's FAG templates on
 * Atlas A2 do).
 *
 * Scope: TND; GQA (query head h uses kv head h / G); fp16 / bf16 / fp32; softmax_in_layout ""
 * (per-sequence NTD statistics) and "same_as_input" (TND); every sparse_mode with or without a mask:
 * no atten_mask = full attention; 2 / 3 / 4 / 7 / 8 the index rules of the compressed mask (never
 * read); 6 the same plus the prefix input; 0 / 1 the full mask ([maxS1, maxS2] local or [T1, T2]
 * global) read row by row and applied with Select (mode 0 also the pre/next band); pse of every type
 * and form (full / row blocks, the compressed ALiBi form, slopes generated in the kernel with
 * q_start_idx / kv_start_idx); dropout (drop_mask bits realigned per row, keep_prob scaling of dP
 * and P); zero-length sequences; a deterministic dk/dv pass (kv-major units, no cross-core atomics).
 * Each feature is a tiling branch (FagV4TilingData: maskKind, pseForm, hasDrop, deterministic).
 *
 * Dataflow per unit (sequence b, query head h, query block [r0, r1)) — semantics.md §3:
 *   D_r = rowsum(fp32(dy) * fp32(attention_in))                     (vector, once per unit)
 *   for every key block [j0, j0 + s2Len) inside the unit's kept column range (index rules):
 *     S  = Q K^T,  dP = dO V^T                       (cube, fp32, into the core's workspace)
 *     P  = keep ? exp(S * scale [+ pse] - max) / sum : 0   (vector, UB loop over vecRows-row chunks)
 *     dS = P * (dP * bit / keep_prob - D_r)                (bit = 1 without dropout)
 *     P, dS -> input dtype (fp16: CAST_ROUND = ties away, bf16: RINT), written to the workspace
 *     dq_ws[rows, h] += dS K;  dk_ws[keys, g] += dS^T Q;  dv_ws[keys, g] += Pd^T dO  (cube, atomic;
 *     Pd = P * bit / keep_prob; deterministic branch: dk / dv in ProcessKv instead)
 * Phases: pre (zero the fp32 accumulators) | SyncAll | main | SyncAll | post (scale dq and dk,
 * cast dq/dk/dv with the output rounding; rows outside the declared lengths come out as 0).
 */
#include "kernel_operator.h"
#include "lib/matmul_intf.h"

#include "flash_attention_unpadding_score_grad_v4_tiling_data.h"

using namespace AscendC;
using fag_v4::FagV4TilingData;

namespace fag_v4_kernel {

constexpr int32_t BUFFER_NUM = 2;  // double buffering of the score chunks

template <typename A, typename B>
struct SameType {
    static constexpr bool value = false;
};
template <typename A>
struct SameType<A, A> {
    static constexpr bool value = true;
};

template <typename T>
__aicore__ constexpr RoundMode OutRound()
{
    // semantics.md §0.5: fp16 HALF_AWAY16 (CAST_ROUND); bf16 RNE (project decision [P])
    return SameType<T, half>::value ? RoundMode::CAST_ROUND : RoundMode::CAST_RINT;
}

// ------------------------------------------------------------------------------------------------
// Pre / post phases: zero the fp32 accumulators, then scale + cast them into dq / dk / dv.
// ------------------------------------------------------------------------------------------------
template <typename T>
class FagV4Post {
public:
    __aicore__ inline void Init(GM_ADDR dq, GM_ADDR dk, GM_ADDR dv, GM_ADDR userWs, const FagV4TilingData* t,
                                TPipe* pipe)
    {
        t_ = t;
        pipe_ = pipe;
        const uint64_t nq = static_cast<uint64_t>(t->t1) * t->n1 * t->d;
        const uint64_t nk = static_cast<uint64_t>(t->t2) * t->n2 * t->d;
        dqGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dq), nq);
        dkGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dk), nk);
        dvGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dv), nk);
        dqWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDqOffset), nq);
        dkWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDkOffset), nk);
        dvWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDvOffset), nk);
        const uint64_t elems = static_cast<uint64_t>(t->postRows) * t->d;
        pipe_->InitBuffer(inQue_, BUFFER_NUM, AlignUp32(elems * sizeof(float)));
        pipe_->InitBuffer(outQue_, BUFFER_NUM, AlignUp32(elems * sizeof(T)));
    }

    // Zero this core's slices of the three fp32 accumulators.
    __aicore__ inline void ProcessZero()
    {
        ZeroSlice(dqWs_, static_cast<uint64_t>(t_->t1) * t_->n1);
        ZeroSlice(dkWs_, static_cast<uint64_t>(t_->t2) * t_->n2);
        ZeroSlice(dvWs_, static_cast<uint64_t>(t_->t2) * t_->n2);
    }

    __aicore__ inline void ProcessCast()
    {
        CastSlice(dqWs_, dqGm_, static_cast<uint64_t>(t_->t1) * t_->n1, t_->scale);
        CastSlice(dkWs_, dkGm_, static_cast<uint64_t>(t_->t2) * t_->n2, t_->scale);
        CastSlice(dvWs_, dvGm_, static_cast<uint64_t>(t_->t2) * t_->n2, 1.0f);
    }

private:
    __aicore__ static inline uint64_t AlignUp32(uint64_t b) { return (b + 31) / 32 * 32; }

    // [begin, end) of the (row, head) vectors this core owns out of `vectors`.
    __aicore__ inline void Slice(uint64_t vectors, uint64_t& begin, uint64_t& end) const
    {
        const uint64_t cores = t_->usedCoreNum;
        const uint64_t per = (vectors + cores - 1) / cores;
        begin = per * GetBlockIdx();
        end = begin + per < vectors ? begin + per : vectors;
        if (begin > end) {
            begin = end;
        }
    }

    __aicore__ inline void ZeroSlice(GlobalTensor<float>& ws, uint64_t vectors)
    {
        uint64_t begin, end;
        Slice(vectors, begin, end);
        if (end > begin) {
            GlobalTensor<float> dst = ws[begin * t_->d];
            InitGlobalMemory(dst, (end - begin) * t_->d, 0.0f);
        }
    }

    __aicore__ inline void CastSlice(GlobalTensor<float>& ws, GlobalTensor<T>& out, uint64_t vectors, float scale)
    {
        uint64_t begin, end;
        Slice(vectors, begin, end);
        for (uint64_t v = begin; v < end; v += t_->postRows) {
            const uint64_t rows = end - v < t_->postRows ? end - v : t_->postRows;
            const uint32_t elems = static_cast<uint32_t>(rows * t_->d);
            // CopyIn
            LocalTensor<float> in = inQue_.template AllocTensor<float>();
            DataCopyExtParams cp{1, static_cast<uint32_t>(elems * sizeof(float)), 0, 0, 0};
            DataCopyPad(in, ws[v * t_->d], cp, DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
            inQue_.EnQue(in);
            // Compute: scale in fp32, one rounding to the output dtype
            in = inQue_.template DeQue<float>();
            LocalTensor<T> o = outQue_.template AllocTensor<T>();
            if constexpr (SameType<T, float>::value) {
                Muls(o, in, scale, elems);
            } else {
                if (scale != 1.0f) {
                    Muls(in, in, scale, elems);
                }
                Cast(o, in, OutRound<T>(), elems);
            }
            inQue_.FreeTensor(in);
            outQue_.EnQue(o);
            // CopyOut
            o = outQue_.template DeQue<T>();
            DataCopyExtParams op{1, static_cast<uint32_t>(elems * sizeof(T)), 0, 0, 0};
            DataCopyPad(out[v * t_->d], o, op);
            outQue_.FreeTensor(o);
        }
    }

    const FagV4TilingData* t_ = nullptr;
    TPipe* pipe_ = nullptr;
    TQue<QuePosition::VECIN, BUFFER_NUM> inQue_;
    TQue<QuePosition::VECOUT, BUFFER_NUM> outQue_;
    GlobalTensor<T> dqGm_, dkGm_, dvGm_;
    GlobalTensor<float> dqWs_, dkWs_, dvWs_;
};

// ------------------------------------------------------------------------------------------------
// Main phase.
// ------------------------------------------------------------------------------------------------
template <typename T>
class FagV4Main {
public:
    using ScoreA = matmul::MatmulType<TPosition::GM, CubeFormat::ND, T, false>;
    using ScoreB = matmul::MatmulType<TPosition::GM, CubeFormat::ND, T, true>;   // K / V rows, transposed
    using PlainA = matmul::MatmulType<TPosition::GM, CubeFormat::ND, T, false>;
    using PlainB = matmul::MatmulType<TPosition::GM, CubeFormat::ND, T, false>;
    using TransA = matmul::MatmulType<TPosition::GM, CubeFormat::ND, T, true>;   // dS / P tiles, transposed
    using OutC = matmul::MatmulType<TPosition::GM, CubeFormat::ND, float>;

    matmul::Matmul<ScoreA, ScoreB, OutC> mmScore;
    matmul::Matmul<PlainA, PlainB, OutC> mmDq;
    matmul::Matmul<TransA, PlainB, OutC> mmDkv;

    __aicore__ inline void Init(GM_ADDR q, GM_ADDR k, GM_ADDR v, GM_ADDR dy, GM_ADDR smax, GM_ADDR ssum,
                                GM_ADDR attnIn, GM_ADDR cumQ, GM_ADDR cumKv, GM_ADDR prefix, GM_ADDR pse,
                                GM_ADDR dropMask, GM_ADDR attenMask, GM_ADDR userWs, const FagV4TilingData* t,
                                TPipe* pipe)
    {
        t_ = t;
        pipe_ = pipe;
        const uint64_t nq = static_cast<uint64_t>(t->t1) * t->n1 * t->d;
        const uint64_t nk = static_cast<uint64_t>(t->t2) * t->n2 * t->d;
        qGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(q), nq);
        kGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(k), nk);
        vGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(v), nk);
        dyGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(dy), nq);
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(attnIn), nq);
        maxGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(smax), static_cast<uint64_t>(t->t1) * t->n1 * 8);
        sumGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(ssum), static_cast<uint64_t>(t->t1) * t->n1 * 8);
        cumQGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(cumQ), t->batch);
        cumKvGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(cumKv), t->batch);
        if (t->maskKind == fag_v4::kMaskPrefix) {
            prefixGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(prefix), t->batch);
        }
        dqWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDqOffset), nq);
        dkWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDkOffset), nk);
        dvWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs + t->wsDvOffset), nk);
        // per-core scratch: S | dP (fp32) | P | dS (input dtype), each [s1Block, s2Stride]
        const uint64_t tile = static_cast<uint64_t>(t->s1Block) * t->s2Stride;
        GM_ADDR core = userWs + t->wsCoreOffset + t->wsCoreBytes * GetBlockIdx();
        sWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(core), tile);
        dpWs_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(core + tile * sizeof(float)), tile);
        pWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(core + 2 * tile * sizeof(float)), tile);
        dsWs_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(core + 2 * tile * sizeof(float) + tile * sizeof(T)), tile);

        const uint32_t vr = t->vecRows;
        pipe_->InitBuffer(inS_, BUFFER_NUM, Align32(vr * t->s2Stride * sizeof(float)));
        pipe_->InitBuffer(inDp_, BUFFER_NUM, Align32(vr * t->s2Stride * sizeof(float)));
        pipe_->InitBuffer(outP_, BUFFER_NUM, Align32(vr * t->s2Stride * sizeof(T)));
        pipe_->InitBuffer(outDs_, BUFFER_NUM, Align32(vr * t->s2Stride * sizeof(T)));
        pipe_->InitBuffer(maxBuf_, Align32(t->s1Block * 8 * sizeof(float)));
        pipe_->InitBuffer(sumBuf_, Align32(t->s1Block * 8 * sizeof(float)));
        pipe_->InitBuffer(drBuf_, Align32(t->s1Block * sizeof(float)));
        pipe_->InitBuffer(inDy_, 1, Align32(vr * t->dAlignIn * sizeof(T)));
        pipe_->InitBuffer(inOut_, 1, Align32(vr * t->dAlignIn * sizeof(T)));
        pipe_->InitBuffer(dyF_, Align32(vr * t->dAlignIn * sizeof(float)));
        pipe_->InitBuffer(outF_, Align32(vr * t->dAlignIn * sizeof(float)));
        pipe_->InitBuffer(redBuf_, 32 + Align32(t->dAlignF * sizeof(float)));
        InitFeatures(pse, dropMask, attenMask);
    }

    // The mask / pse / dropout branches: their GM inputs and per-row UB buffers (sizes as
    // fag_v4::FagV4FeatureUbBytes on the host).
    __aicore__ inline void InitFeatures(GM_ADDR pse, GM_ADDR dropMask, GM_ADDR attenMask)
    {
        const uint32_t w = t_->s2Stride;
        fullMask_ = t_->maskKind == fag_v4::kMaskFull || t_->maskKind == fag_v4::kMaskFullBand;
        if (fullMask_) {
            maskGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(attenMask));
            pipe_->InitBuffer(maskU8Buf_, Align32(w));
            pipe_->InitBuffer(maskHBuf_, Align32(w * sizeof(half)));
            pipe_->InitBuffer(maskBitsBuf_, Align32(w / 8));
        }
        if (t_->pseForm != fag_v4::kPseNone) {
            pipe_->InitBuffer(biasBuf_, Align32(w * sizeof(float)));
            if (t_->pseForm == fag_v4::kPseSlopes) {
                slopeGm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(pse));
                pipe_->InitBuffer(rampBuf_, Align32(w * sizeof(float)));
                LocalTensor<float> ramp = rampBuf_.Get<float>();
                for (uint32_t c = 0; c < w; ++c) {
                    ramp.SetValue(c, static_cast<float>(c));  // column index ramp, once per core
                }
                SyncScalarToVector();
            } else {
                pseGm_.SetGlobalBuffer(reinterpret_cast<__gm__ T*>(pse));
                if constexpr (!SameType<T, float>::value) {
                    pipe_->InitBuffer(pseTBuf_, Align32(w * sizeof(T)));
                }
            }
        }
        if (t_->hasDrop) {
            dropGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(dropMask));
            pipe_->InitBuffer(dropInBuf_, Align32(w / 8 + 2));
            pipe_->InitBuffer(dropBitsBuf_, Align32(w / 8 + 1));
        }
    }

    __aicore__ inline void Process()
    {
        if (GetBlockIdx() >= t_->usedCoreNum) {
            return;  // a vector core beyond the split (odd core count on a 1:2 MIX launch)
        }
        const uint64_t uBegin = t_->unitStart[GetBlockIdx()];
        const uint64_t uEnd = t_->unitStart[GetBlockIdx() + 1];
        if (uBegin >= uEnd) {
            return;
        }
        // Decode the first unit, then walk units in (b, h, block) order.
        uint64_t u = 0;
        int64_t prevQ = 0, prevK = 0, oq = 0, ok = 0;
        for (uint32_t b = 0; b < t_->batch && u < uEnd; ++b) {
            int64_t s1, s2;
            SeqLengths(b, prevQ, prevK, s1, s2);
            const uint64_t nBlk = (static_cast<uint64_t>(s1) + t_->s1Block - 1) / t_->s1Block;
            const uint64_t seqUnits = nBlk * t_->n1;
            if (u + seqUnits > uBegin) {
                for (uint64_t x = (uBegin > u ? uBegin - u : 0); x < seqUnits && u + x < uEnd; ++x) {
                    const uint32_t h = static_cast<uint32_t>(x / nBlk);
                    const int64_t r0 = static_cast<int64_t>(x % nBlk) * t_->s1Block;
                    const int64_t r1 = r0 + t_->s1Block < s1 ? r0 + t_->s1Block : s1;
                    ProcessUnit(b, oq, ok, s1, s2, h, r0, r1);
                }
            }
            u += seqUnits;
            NextSequence(oq, ok, s1, s2);
        }
    }

    // Deterministic pass (tiling branch `deterministic`): dk / dv by kv-major units (b, kv head g, key
    // block). Each unit owns its dk / dv rows, so they are accumulated by one core in a fixed order (no
    // cross-core atomics); the scores are recomputed for every query head of the group and query block.
    __aicore__ inline void ProcessKv()
    {
        if (GetBlockIdx() >= t_->usedCoreNum) {
            return;
        }
        const uint64_t uBegin = t_->kvUnitStart[GetBlockIdx()];
        const uint64_t uEnd = t_->kvUnitStart[GetBlockIdx() + 1];
        uint64_t u = 0;
        int64_t prevQ = 0, prevK = 0, oq = 0, ok = 0;
        pairBase_ = 0;
        rowBase_ = 0;
        for (uint32_t b = 0; b < t_->batch && u < uEnd; ++b) {
            int64_t s1, s2;
            SeqLengths(b, prevQ, prevK, s1, s2);
            if (s1 == 0) {
                NextSequence(oq, ok, s1, s2);
                continue;
            }
            const uint64_t nBlk = (static_cast<uint64_t>(s2) + t_->s2Block - 1) / t_->s2Block;
            const uint64_t seqUnits = nBlk * t_->n2;
            for (uint64_t x = (uBegin > u ? uBegin - u : 0); x < seqUnits && u + x < uEnd; ++x) {
                const uint32_t g = static_cast<uint32_t>(x / nBlk);
                const int64_t kj0 = static_cast<int64_t>(x % nBlk) * t_->s2Block;
                const int64_t kj1 = kj0 + t_->s2Block < s2 ? kj0 + t_->s2Block : s2;
                for (uint32_t h = g * t_->g; h < (g + 1) * t_->g; ++h) {
                    for (int64_t r0 = 0; r0 < s1; r0 += t_->s1Block) {
                        const int64_t r1 = r0 + t_->s1Block < s1 ? r0 + t_->s1Block : s1;
                        int64_t colBegin, colEnd, unused;
                        ColRange(b, r0, s1, s2, colBegin, unused);
                        ColRange(b, r1 - 1, s1, s2, unused, colEnd);
                        colBegin = colBegin > kj0 ? colBegin : kj0;
                        colEnd = colEnd < kj1 ? colEnd : kj1;
                        if (colEnd <= colBegin) {
                            continue;
                        }
                        const uint32_t rows = static_cast<uint32_t>(r1 - r0);
                        LoadStats(oq, s1, h, r0, rows);
                        ComputeDr(oq, h, r0, rows);
                        ProcessTile(b, oq, ok, s1, s2, h, r0, rows, colBegin,
                                    static_cast<uint32_t>(colEnd - colBegin), false, true);
                    }
                }
            }
            u += seqUnits;
            NextSequence(oq, ok, s1, s2);
        }
    }

private:
    __aicore__ static inline uint32_t Align32(uint64_t b) { return static_cast<uint32_t>((b + 31) / 32 * 32); }

    // S1_b / S2_b from the cumulative lengths (negative steps clamp to 0), and prefix[b] (mode 6).
    __aicore__ inline void SeqLengths(uint32_t b, int64_t& prevQ, int64_t& prevK, int64_t& s1, int64_t& s2)
    {
        const int64_t cq = cumQGm_.GetValue(b), ck = cumKvGm_.GetValue(b);
        s1 = cq - prevQ > 0 ? cq - prevQ : 0;
        s2 = ck - prevK > 0 ? ck - prevK : 0;
        prevQ = cq;
        prevK = ck;
        prefixB_ = t_->maskKind == fag_v4::kMaskPrefix ? prefixGm_.GetValue(b) : 0;
    }

    // Offsets of the next sequence: rows of q / k, its [N1, S1, S2] block in drop_mask and the full
    // pse form, its [N1, 1, S2] rows in the broadcast pse form.
    __aicore__ inline void NextSequence(int64_t& oq, int64_t& ok, int64_t s1, int64_t s2)
    {
        oq += s1;
        ok += s2;
        pairBase_ += static_cast<uint64_t>(t_->n1) * s1 * s2;
        rowBase_ += static_cast<uint64_t>(t_->n1) * s2;
    }

    // Kept key columns [start, end) of local query row r of sequence b (semantics.md §4 index rules;
    // same function as fag_v4::FagV4RowRange on the host). Both bounds grow with r.
    __aicore__ inline void ColRange(uint32_t b, int64_t r, int64_t s1, int64_t s2, int64_t& start, int64_t& end) const
    {
        const int64_t delta = s2 - s1;
        start = 0;
        end = s2;
        switch (t_->maskKind) {
            case fag_v4::kMaskLeftUp: end = r + 1; break;
            case fag_v4::kMaskRightDown: end = r + delta + 1; break;
            case fag_v4::kMaskBand:
                start = r + delta - t_->preTokens;
                end = r + delta + t_->nextTokens + 1;
                break;
            case fag_v4::kMaskRightDownBand: end = r + delta + (b == t_->bandLast ? t_->nextTokens : 0) + 1; break;
            case fag_v4::kMaskBandLeftUp:
                end = (b == t_->bandFirst) ? r + s2 - (s1 - t_->nextTokens > 0 ? s1 - t_->nextTokens : 0) + 1 : r + 1;
                break;
            case fag_v4::kMaskPrefix: end = r + delta + 1 > prefixB_ ? r + delta + 1 : prefixB_; break;
            case fag_v4::kMaskFullBand:
                start = r - t_->preTokens;
                end = r + t_->nextTokens + 1;
                break;
            default: break;
        }
        start = start < 0 ? 0 : (start > s2 ? s2 : start);
        end = end < start ? start : (end > s2 ? s2 : end);
    }

    __aicore__ inline void ProcessUnit(uint32_t b, int64_t oq, int64_t ok, int64_t s1, int64_t s2, uint32_t h,
                                       int64_t r0, int64_t r1)
    {
        // bounds grow with the row: the unit's key range is [start(r0), end(r1 - 1))
        int64_t colBegin, colEnd, unused;
        ColRange(b, r0, s1, s2, colBegin, unused);
        ColRange(b, r1 - 1, s1, s2, unused, colEnd);
        if (colEnd <= colBegin) {
            return;  // nothing kept: P = 0, the unit contributes nothing
        }
        const uint32_t rows = static_cast<uint32_t>(r1 - r0);
        LoadStats(oq, s1, h, r0, rows);
        ComputeDr(oq, h, r0, rows);
        // deterministic: dq here (its rows belong to this unit alone), dk / dv in ProcessKv
        const bool dkv = t_->deterministic == 0;
        for (int64_t j0 = colBegin; j0 < colEnd; j0 += t_->s2Block) {
            const uint32_t cols = static_cast<uint32_t>(colEnd - j0 < t_->s2Block ? colEnd - j0 : t_->s2Block);
            ProcessTile(b, oq, ok, s1, s2, h, r0, rows, j0, cols, true, dkv);
        }
    }

    // One [rows, cols] score tile: S and dP (cube), P and dS (vector, UB loop), the gradient matmuls.
    __aicore__ inline void ProcessTile(uint32_t b, int64_t oq, int64_t ok, int64_t s1, int64_t s2, uint32_t h,
                                       int64_t r0, uint32_t rows, int64_t j0, uint32_t cols, bool dq, bool dkv)
    {
        const uint32_t g = h / t_->g;
        curH_ = h;
        curOq_ = oq;
        curOk_ = ok;
        ScoreMatmuls(oq, ok, h, g, r0, rows, j0, cols);
        for (uint32_t c0 = 0; c0 < rows; c0 += t_->vecRows) {
            const uint32_t cr = rows - c0 < t_->vecRows ? rows - c0 : t_->vecRows;
            CopyIn(c0, cr);
            Compute(b, s1, s2, r0, c0, cr, j0, cols);
            CopyOut(c0, cr);
        }
        PipeBarrier<PIPE_ALL>();  // P / dS in the workspace before the cube reads them
        GradMatmuls(oq, ok, h, g, r0, rows, j0, cols, dq, dkv);
    }

    // softmax_max / softmax_sum rows [r0, r0 + rows) of head h (8 lanes each, lane 0 used).
    __aicore__ inline void LoadStats(int64_t oq, int64_t s1, uint32_t h, int64_t r0, uint32_t rows)
    {
        LocalTensor<float> mx = maxBuf_.Get<float>();
        LocalTensor<float> sm = sumBuf_.Get<float>();
        if (t_->softmaxTnd) {
            // TND: row t, head h at (t * N1 + h) * 8: one 32-byte block per row, N1 - 1 blocks apart
            const uint64_t off = (static_cast<uint64_t>(oq + r0) * t_->n1 + h) * 8;
            DataCopyParams p{static_cast<uint16_t>(rows), 1, static_cast<uint16_t>(t_->n1 - 1), 0};
            DataCopy(mx, maxGm_[off], p);
            DataCopy(sm, sumGm_[off], p);
        } else {
            // NTD: per-sequence [N1, S1, 8] blocks, contiguous rows
            const uint64_t off = (static_cast<uint64_t>(oq) * t_->n1 + static_cast<uint64_t>(h) * s1 + r0) * 8;
            DataCopy(mx, maxGm_[off], rows * 8);
            DataCopy(sm, sumGm_[off], rows * 8);
        }
        SyncMte2ToScalar();
    }

    // D_r = sum_d fp32(dy) * fp32(attention_in) for the unit's rows, vecRows rows per UB loop.
    __aicore__ inline void ComputeDr(int64_t oq, uint32_t h, int64_t r0, uint32_t rows)
    {
        LocalTensor<float> dr = drBuf_.Get<float>();
        LocalTensor<float> red = redBuf_.Get<float>();
        const uint32_t d = t_->d, da = t_->dAlignIn;
        for (uint32_t c0 = 0; c0 < rows; c0 += t_->vecRows) {
            const uint32_t cr = rows - c0 < t_->vecRows ? rows - c0 : t_->vecRows;
            const uint64_t off = (static_cast<uint64_t>(oq + r0 + c0) * t_->n1 + h) * d;
            DataCopyExtParams p{static_cast<uint16_t>(cr), static_cast<uint32_t>(d * sizeof(T)),
                                static_cast<uint32_t>((t_->n1 - 1) * d * sizeof(T)), 0, 0};
            LocalTensor<T> a = inDy_.template AllocTensor<T>();
            LocalTensor<T> o = inOut_.template AllocTensor<T>();
            DataCopyPad(a, dyGm_[off], p, DataCopyPadExtParams<T>{false, 0, 0, static_cast<T>(0)});
            DataCopyPad(o, outGm_[off], p, DataCopyPadExtParams<T>{false, 0, 0, static_cast<T>(0)});
            inDy_.EnQue(a);
            inOut_.EnQue(o);
            a = inDy_.template DeQue<T>();
            o = inOut_.template DeQue<T>();
            LocalTensor<float> af = dyF_.Get<float>();
            LocalTensor<float> of = outF_.Get<float>();
            if constexpr (SameType<T, float>::value) {
                Mul(af, a, o, cr * da);
            } else {
                Cast(af, a, RoundMode::CAST_NONE, cr * da);  // exact widening
                Cast(of, o, RoundMode::CAST_NONE, cr * da);
                Mul(af, af, of, cr * da);
            }
            inDy_.FreeTensor(a);
            inOut_.FreeTensor(o);
            for (uint32_t r = 0; r < cr; ++r) {
                ReduceSum(red, af[r * da], red[8], d);  // result in red[0], work area after it
                SyncVectorToScalar();
                dr.SetValue(c0 + r, red.GetValue(0));
            }
        }
    }

    // S = Q K^T and dP = dO V^T for the tile into the core's workspace (fp32).
    __aicore__ inline void ScoreMatmuls(int64_t oq, int64_t ok, uint32_t h, uint32_t g, int64_t r0, uint32_t rows,
                                        int64_t j0, uint32_t cols)
    {
        const uint64_t qOff = (static_cast<uint64_t>(oq + r0) * t_->n1 + h) * t_->d;
        const uint64_t kOff = (static_cast<uint64_t>(ok + j0) * t_->n2 + g) * t_->d;
        // A [rows, d] with row stride N1*d; B stored [cols, d] with row stride N2*d; C row stride s2Stride
        mmScore.SetOrgShape(rows, cols, t_->n1 * t_->d, t_->n2 * t_->d, t_->s2Stride);
        mmScore.SetSingleShape(rows, cols, t_->d);
        mmScore.SetTensorA(qGm_[qOff], false);
        mmScore.SetTensorB(kGm_[kOff], true);
        mmScore.IterateAll(sWs_, 0);
        mmScore.SetTensorA(dyGm_[qOff], false);
        mmScore.SetTensorB(vGm_[kOff], true);
        mmScore.IterateAll(dpWs_, 0);
        mmScore.End();
    }

    // dq += dS K; dk += dS^T Q; dv += P^T dO (fp32 atomic accumulation in the workspace).
    __aicore__ inline void GradMatmuls(int64_t oq, int64_t ok, uint32_t h, uint32_t g, int64_t r0, uint32_t rows,
                                       int64_t j0, uint32_t cols, bool dq, bool dkv)
    {
        const uint64_t qOff = (static_cast<uint64_t>(oq + r0) * t_->n1 + h) * t_->d;
        const uint64_t kOff = (static_cast<uint64_t>(ok + j0) * t_->n2 + g) * t_->d;
        if (dq) {
            // dS [rows, cols] (row stride s2Stride) x K [cols, d] (row stride N2*d) -> dq rows (stride N1*d)
            mmDq.SetOrgShape(rows, t_->n2 * t_->d, t_->s2Stride, cols, t_->n1 * t_->d);
            mmDq.SetSingleShape(rows, t_->d, cols);
            mmDq.SetTensorA(dsWs_, false);
            mmDq.SetTensorB(kGm_[kOff], false);
            mmDq.IterateAll(dqWs_[qOff], 1);
            mmDq.End();
        }
        if (!dkv) {
            return;
        }
        // dS^T: stored [rows, cols] = [K, M] with row stride s2Stride; Q [rows, d] (row stride N1*d)
        mmDkv.SetOrgShape(t_->s2Stride, t_->n1 * t_->d, rows, rows, t_->n2 * t_->d);
        mmDkv.SetSingleShape(cols, t_->d, rows);
        mmDkv.SetTensorA(dsWs_, true);
        mmDkv.SetTensorB(qGm_[qOff], false);
        mmDkv.IterateAll(dkWs_[kOff], 1);
        mmDkv.SetTensorA(pWs_, true);
        mmDkv.SetTensorB(dyGm_[qOff], false);
        mmDkv.IterateAll(dvWs_[kOff], 1);
        mmDkv.End();
    }

    __aicore__ inline void CopyIn(uint32_t c0, uint32_t cr)
    {
        const uint32_t n = cr * t_->s2Stride;
        LocalTensor<float> s = inS_.template AllocTensor<float>();
        LocalTensor<float> dp = inDp_.template AllocTensor<float>();
        DataCopy(s, sWs_[static_cast<uint64_t>(c0) * t_->s2Stride], n);
        DataCopy(dp, dpWs_[static_cast<uint64_t>(c0) * t_->s2Stride], n);
        inS_.EnQue(s);
        inDp_.EnQue(dp);
    }

    // Zero row[from, to): vector fill of the 32-byte aligned part, scalar stores for the unaligned ends.
    template <typename U>
    __aicore__ inline void ZeroRange(const LocalTensor<U>& row, uint32_t from, uint32_t to)
    {
        constexpr uint32_t perBlock = 32 / sizeof(U);
        if (from >= to) {
            return;
        }
        uint32_t a = (from + perBlock - 1) / perBlock * perBlock;  // first aligned index
        uint32_t e = to / perBlock * perBlock;                      // end of the aligned part
        if (a < e) {
            Duplicate(row[a], static_cast<U>(0), e - a);
        } else {
            a = to;  // no aligned part: scalar stores only
            e = to;
        }
        if (from < a || e < to) {
            SyncVectorToScalar();
            for (uint32_t j = from; j < a; ++j) {
                row.SetValue(j, static_cast<U>(0));
            }
            for (uint32_t j = e; j < to; ++j) {
                row.SetValue(j, static_cast<U>(0));
            }
            SyncScalarToVector();
        }
    }

    __aicore__ inline void Compute(uint32_t b, int64_t s1, int64_t s2, int64_t r0, uint32_t c0, uint32_t cr,
                                   int64_t j0, uint32_t cols)
    {
        LocalTensor<float> s = inS_.template DeQue<float>();
        LocalTensor<float> dp = inDp_.template DeQue<float>();
        LocalTensor<float> mx = maxBuf_.Get<float>();
        LocalTensor<float> sm = sumBuf_.Get<float>();
        LocalTensor<float> dr = drBuf_.Get<float>();
        const uint32_t stride = t_->s2Stride;
        constexpr uint32_t perBlock = 32 / sizeof(float);
        for (uint32_t r = 0; r < cr; ++r) {
            const uint32_t lr = c0 + r;  // row inside the unit
            int64_t start, end;
            ColRange(b, r0 + lr, s1, s2, start, end);
            int64_t lo = start - j0, hi = end - j0;  // kept columns of this row inside the tile
            lo = lo < 0 ? 0 : (lo > cols ? cols : lo);
            hi = hi < lo ? lo : (hi > cols ? cols : hi);
            LocalTensor<float> sRow = s[r * stride];
            LocalTensor<float> dpRow = dp[r * stride];
            if (hi > lo) {
                const float rowMax = mx.GetValue(lr * 8);
                const float rowSum = sm.GetValue(lr * 8);
                const float rowDr = dr.GetValue(lr);
                // vector ops start 32-byte aligned: [a0, hi), the columns before lo are zeroed below
                const uint32_t a0 = static_cast<uint32_t>(lo) / perBlock * perBlock;
                const uint32_t n = static_cast<uint32_t>(hi) - a0;
                LocalTensor<float> sv = sRow[a0];
                LocalTensor<float> dv = dpRow[a0];
                const int64_t i = r0 + lr;     // local query row
                const int64_t jv = j0 + a0;    // local key column of the vector range's first element
                // P = exp(S * scale [+ pse] - max) / sum  (pse_type 1: (S + pse) * scale)
                Muls(sv, sv, t_->scale, n);
                if (t_->pseForm != fag_v4::kPseNone) {
                    LocalTensor<float> bias = LoadBias(b, s1, s2, i, jv, n);
                    if (t_->pseType == 1) {
                        Muls(bias, bias, t_->scale, n);
                    }
                    Add(sv, sv, bias, n);
                }
                Adds(sv, sv, -rowMax, n);
                Exp(sv, sv, n);
                Muls(sv, sv, 1.0f / rowSum, n);
                if (fullMask_) {
                    // masked -> P = 0 exactly (also replaces exp overflow of masked scores)
                    Select(sv, LoadMaskBits(i, jv, n), sv, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, n);
                }
                LocalTensor<uint8_t> keep;
                if (t_->hasDrop) {
                    // dPd = dP * bit / keep_prob
                    keep = LoadDropBits(s1, s2, i, jv, n);
                    Select(dv, keep, dv, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, n);
                    Muls(dv, dv, t_->keepScale, n);
                }
                // dS = P * (dPd - D_r)
                Adds(dv, dv, -rowDr, n);
                Mul(dv, dv, sv, n);
                if (t_->hasDrop) {
                    // dv takes the dropped P: Pd = P * bit / keep_prob
                    Select(sv, keep, sv, 0.0f, SELMODE::VSEL_TENSOR_SCALAR_MODE, n);
                    Muls(sv, sv, t_->keepScale, n);
                }
            }
            // masked columns and the tile padding: P = dS = 0 exactly
            ZeroRange(sRow, 0, static_cast<uint32_t>(lo));
            ZeroRange(dpRow, 0, static_cast<uint32_t>(lo));
            ZeroRange(sRow, static_cast<uint32_t>(hi), stride);
            ZeroRange(dpRow, static_cast<uint32_t>(hi), stride);
        }
        LocalTensor<T> p = outP_.template AllocTensor<T>();
        LocalTensor<T> ds = outDs_.template AllocTensor<T>();
        const uint32_t n = cr * stride;
        if constexpr (SameType<T, float>::value) {
            DataCopy(p, s, n);
            DataCopy(ds, dp, n);
        } else {
            // semantics §0.5: dS and P are cast to the input dtype before the matmuls
            Cast(p, s, OutRound<T>(), n);
            Cast(ds, dp, OutRound<T>(), n);
        }
        inS_.FreeTensor(s);
        inDp_.FreeTensor(dp);
        outP_.EnQue(p);
        outDs_.EnQue(ds);
    }

    // pse of local row i, columns [j, j + n) as fp32 (semantics.md §5), in biasBuf_.
    __aicore__ inline LocalTensor<float> LoadBias(uint32_t b, int64_t s1, int64_t s2, int64_t i, int64_t j, uint32_t n)
    {
        LocalTensor<float> bias = biasBuf_.Get<float>();
        const uint32_t h = curH_;
        if (t_->pseForm == fag_v4::kPseSlopes) {
            // -slope * f(|(j + c + kv_start) - (i + q_start)|), f = identity (type 2) or sqrt (type 3)
            const float slope = slopeGm_.GetValue(t_->pseSlopesPerBatch ? static_cast<uint64_t>(b) * t_->n1 + h : h);
            const float shift = static_cast<float>(j + t_->kvStart - i - t_->qStart);
            Adds(bias, rampBuf_.Get<float>(), shift, n);
            Abs(bias, bias, n);
            if (t_->pseType == 3) {
                Sqrt(bias, bias, n);
            }
            Muls(bias, bias, -slope, n);
            return bias;
        }
        LocalTensor<T> row;
        if constexpr (SameType<T, float>::value) {
            row = bias;
        } else {
            row = pseTBuf_.Get<T>();
        }
        if (t_->pseForm == fag_v4::kPseAlibi) {
            // compressed Toeplitz pse: i >= j from the last row (contiguous in j), i < j from the last
            // column (row 1023 - (j - i), clamped at row 0), read element by element
            const uint64_t sRef = static_cast<uint64_t>(t_->pseSRef);
            const uint64_t base = static_cast<uint64_t>(b) * t_->pseBatchStride + static_cast<uint64_t>(h) * 1024 * sRef;
            int64_t lower = i + 1 - j;  // columns j' <= i of the range
            lower = lower < 0 ? 0 : (lower > n ? n : lower);
            if (lower > 0) {
                const uint64_t off = base + 1023 * sRef + (sRef - 1 - static_cast<uint64_t>(i) + static_cast<uint64_t>(j));
                DataCopyExtParams cp{1, static_cast<uint32_t>(lower * sizeof(T)), 0, 0, 0};
                DataCopyPad(row, pseGm_[off], cp, DataCopyPadExtParams<T>{false, 0, 0, static_cast<T>(0)});
                SyncMte2ToScalar();
            }
            for (uint32_t c = static_cast<uint32_t>(lower); c < n; ++c) {
                const int64_t k = j + c - i;  // >= 1
                const uint64_t r = k > 1023 ? 0 : static_cast<uint64_t>(1023 - k);
                row.SetValue(c, pseGm_.GetValue(base + r * sRef + sRef - 1));
            }
            SyncScalarToVector();
        } else {
            const uint64_t off = t_->pseForm == fag_v4::kPseFull
                                     ? pairBase_ + (static_cast<uint64_t>(h) * s1 + i) * s2 + j
                                     : rowBase_ + static_cast<uint64_t>(h) * s2 + j;
            DataCopyExtParams cp{1, static_cast<uint32_t>(n * sizeof(T)), 0, 0, 0};
            DataCopyPad(row, pseGm_[off], cp, DataCopyPadExtParams<T>{false, 0, 0, static_cast<T>(0)});
            SyncMte2ToVector();
        }
        if constexpr (!SameType<T, float>::value) {
            Cast(bias, row, RoundMode::CAST_NONE, n);  // exact widening
        }
        return bias;
    }

    // atten_mask (full form) of local row i, columns [j, j + n) as Select bits (1 = kept).
    __aicore__ inline LocalTensor<uint8_t> LoadMaskBits(int64_t i, int64_t j, uint32_t n)
    {
        LocalTensor<uint8_t> mu = maskU8Buf_.Get<uint8_t>();
        const uint64_t row = t_->maskLocal ? static_cast<uint64_t>(i) : static_cast<uint64_t>(curOq_ + i);
        const uint64_t col = t_->maskLocal ? static_cast<uint64_t>(j) : static_cast<uint64_t>(curOk_ + j);
        DataCopyExtParams cp{1, n, 0, 0, 0};
        DataCopyPad(mu, maskGm_[row * t_->maskCols + col], cp, DataCopyPadExtParams<uint8_t>{false, 0, 0, 0});
        SyncMte2ToVector();
        const uint32_t nA = (n + 15) / 16 * 16;  // CompareScalar on half: whole 32-byte blocks
        LocalTensor<half> mh = maskHBuf_.Get<half>();
        Cast(mh, mu, RoundMode::CAST_NONE, nA);  // bytes [n, nA) are unspecified: their bits are unused
        LocalTensor<uint8_t> bits = maskBitsBuf_.Get<uint8_t>();
        CompareScalar(bits, mh, static_cast<half>(0.0f), CMPMODE::EQ, nA);
        return bits;
    }

    // drop_mask bits (LSB first, 1 = keep, semantics.md §6) of row i, columns [j, j + n) of query head
    // h, realigned so that bit c of the result is column j + c (the element index need not start a byte).
    __aicore__ inline LocalTensor<uint8_t> LoadDropBits(int64_t s1, int64_t s2, int64_t i, int64_t j, uint32_t n)
    {
        const uint64_t e0 = pairBase_ + (static_cast<uint64_t>(curH_) * s1 + i) * s2 + j;
        const uint32_t shift = static_cast<uint32_t>(e0 % 8);
        const uint32_t inBytes = (shift + n + 7) / 8;
        LocalTensor<uint8_t> in = dropInBuf_.Get<uint8_t>();
        DataCopyExtParams cp{1, inBytes, 0, 0, 0};
        DataCopyPad(in, dropGm_[e0 / 8], cp, DataCopyPadExtParams<uint8_t>{false, 0, 0, 0});
        SyncMte2ToScalar();
        LocalTensor<uint8_t> bits = dropBitsBuf_.Get<uint8_t>();
        for (uint32_t m = 0; m < (n + 7) / 8; ++m) {  // one scalar step per 8 elements
            uint32_t v = static_cast<uint32_t>(in.GetValue(m)) >> shift;
            if (shift != 0 && m + 1 < inBytes) {
                v |= static_cast<uint32_t>(in.GetValue(m + 1)) << (8 - shift);
            }
            bits.SetValue(m, static_cast<uint8_t>(v & 0xFF));
        }
        SyncScalarToVector();
        return bits;
    }

    __aicore__ inline void CopyOut(uint32_t c0, uint32_t cr)
    {
        const uint32_t n = cr * t_->s2Stride;
        LocalTensor<T> p = outP_.template DeQue<T>();
        LocalTensor<T> ds = outDs_.template DeQue<T>();
        DataCopy(pWs_[static_cast<uint64_t>(c0) * t_->s2Stride], p, n);
        DataCopy(dsWs_[static_cast<uint64_t>(c0) * t_->s2Stride], ds, n);
        outP_.FreeTensor(p);
        outDs_.FreeTensor(ds);
    }

    __aicore__ inline void SyncMte2ToScalar()
    {
        TEventID e = pipe_->FetchEventID(HardEvent::MTE2_S);
        SetFlag<HardEvent::MTE2_S>(e);
        WaitFlag<HardEvent::MTE2_S>(e);
    }
    __aicore__ inline void SyncMte2ToVector()
    {
        TEventID e = pipe_->FetchEventID(HardEvent::MTE2_V);
        SetFlag<HardEvent::MTE2_V>(e);
        WaitFlag<HardEvent::MTE2_V>(e);
    }
    __aicore__ inline void SyncVectorToScalar()
    {
        TEventID e = pipe_->FetchEventID(HardEvent::V_S);
        SetFlag<HardEvent::V_S>(e);
        WaitFlag<HardEvent::V_S>(e);
    }
    __aicore__ inline void SyncScalarToVector()
    {
        TEventID e = pipe_->FetchEventID(HardEvent::S_V);
        SetFlag<HardEvent::S_V>(e);
        WaitFlag<HardEvent::S_V>(e);
    }

    const FagV4TilingData* t_ = nullptr;
    TPipe* pipe_ = nullptr;
    GlobalTensor<T> qGm_, kGm_, vGm_, dyGm_, outGm_, pWs_, dsWs_;
    GlobalTensor<float> maxGm_, sumGm_, dqWs_, dkWs_, dvWs_, sWs_, dpWs_;
    GlobalTensor<int64_t> cumQGm_, cumKvGm_, prefixGm_;
    int64_t prefixB_ = 0;  // prefix[b] of the sequence being processed (mode 6)
    uint64_t pairBase_ = 0;  // N1 * sum_{b' < b} S1 * S2: the sequence's block in drop_mask / the full pse
    uint64_t rowBase_ = 0;   // N1 * sum_{b' < b} S2: the sequence's rows in the broadcast pse
    uint32_t curH_ = 0;      // query head of the tile being processed
    int64_t curOq_ = 0, curOk_ = 0;  // first q / kv row of its sequence
    bool fullMask_ = false;
    GlobalTensor<T> pseGm_;
    GlobalTensor<float> slopeGm_;
    GlobalTensor<uint8_t> maskGm_, dropGm_;
    TBuf<TPosition::VECCALC> maskU8Buf_, maskHBuf_, maskBitsBuf_, biasBuf_, rampBuf_, pseTBuf_, dropInBuf_,
        dropBitsBuf_;
    TQue<QuePosition::VECIN, BUFFER_NUM> inS_, inDp_;
    TQue<QuePosition::VECOUT, BUFFER_NUM> outP_, outDs_;
    TQue<QuePosition::VECIN, 1> inDy_, inOut_;
    TBuf<TPosition::VECCALC> maxBuf_, sumBuf_, drBuf_, dyF_, outF_, redBuf_;
};

// GM inputs of the kernel (OpDef order); the tiling says which optional ones are read.
struct FagV4Inputs {
    GM_ADDR q;
    GM_ADDR k;
    GM_ADDR v;
    GM_ADDR dy;
    GM_ADDR pse;
    GM_ADDR dropMask;
    GM_ADDR attenMask;
    GM_ADDR smax;
    GM_ADDR ssum;
    GM_ADDR attnIn;
    GM_ADDR prefix;
    GM_ADDR cumQ;
    GM_ADDR cumKv;
};

template <typename T>
__aicore__ inline void RunFagV4(const FagV4Inputs& in, GM_ADDR dq, GM_ADDR dk, GM_ADDR dv, GM_ADDR userWs,
                                const FagV4TilingData* t)
{
    // MIX kernel: the vector cores (AIV) run every phase and drive the cube cores (AIC) through the
    // Matmul objects; the AIC side only serves the Matmul requests of the main phase.
    if ASCEND_IS_AIV {
        TPipe pipe;
        FagV4Post<T> pre;
        pre.Init(dq, dk, dv, userWs, t, &pipe);
        pre.ProcessZero();
        pipe.Destroy();
        PipeBarrier<PIPE_ALL>();  // zeros in GM before any core accumulates
        SyncAll();
    }
    {
        TPipe pipe;
        FagV4Main<T> op;
        REGIST_MATMUL_OBJ(&pipe, GetSysWorkSpacePtr(), op.mmScore, &t->mmScore, op.mmDq, &t->mmDq, op.mmDkv,
                          &t->mmDkv);
        op.Init(in.q, in.k, in.v, in.dy, in.smax, in.ssum, in.attnIn, in.cumQ, in.cumKv, in.prefix, in.pse,
                in.dropMask, in.attenMask, userWs, t, &pipe);
        op.Process();
        if (t->deterministic) {
            op.ProcessKv();
        }
        pipe.Destroy();
    }
    if ASCEND_IS_AIV {
        PipeBarrier<PIPE_ALL>();
        SyncAll();  // every core's atomic adds are done before the cast reads the accumulators
        TPipe pipe;
        FagV4Post<T> post;
        post.Init(dq, dk, dv, userWs, t, &pipe);
        post.ProcessCast();
        pipe.Destroy();
    }
}

}  // namespace fag_v4_kernel

// Parameter order = OpDef inputs, outputs, workspace, tiling.
extern "C" __global__ __aicore__ void ascend_attn_flash_attention_unpadding_score_grad_v4(
    GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR dy, GM_ADDR pseShift, GM_ADDR dropMask, GM_ADDR paddingMask,
    GM_ADDR attenMask, GM_ADDR softmaxMax, GM_ADDR softmaxSum, GM_ADDR softmaxIn, GM_ADDR attentionIn, GM_ADDR prefix,
    GM_ADDR actualSeqQlen, GM_ADDR actualSeqKvlen, GM_ADDR qStartIdx, GM_ADDR kvStartIdx, GM_ADDR dq, GM_ADDR dk,
    GM_ADDR dv, GM_ADDR dpse, GM_ADDR workspace, GM_ADDR tiling)
{
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_2);
    REGISTER_TILING_DEFAULT(fag_v4::FagV4TilingData);
    GET_TILING_DATA_WITH_STRUCT(fag_v4::FagV4TilingData, tilingData, tiling);
    GM_ADDR userWs = GetUserWorkspace(workspace);
    if (userWs == nullptr) {
        return;
    }
    const fag_v4_kernel::FagV4Inputs in{query,     key,        value,       dy,     pseShift,      dropMask,      attenMask,
                                        softmaxMax, softmaxSum, attentionIn, prefix, actualSeqQlen, actualSeqKvlen};
    if (TILING_KEY_IS(0)) {
        fag_v4_kernel::RunFagV4<half>(in, dq, dk, dv, userWs, &tilingData);
    } else if (TILING_KEY_IS(1)) {
        fag_v4_kernel::RunFagV4<bfloat16_t>(in, dq, dk, dv, userWs, &tilingData);
    } else if (TILING_KEY_IS(2)) {
        fag_v4_kernel::RunFagV4<float>(in, dq, dk, dv, userWs, &tilingData);
    }
}
