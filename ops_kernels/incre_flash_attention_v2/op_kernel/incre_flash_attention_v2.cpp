/*
 * AscendAttnIncreFlashAttentionV2 kernel: decode attention with the V2 int8
 * scenarios, semantics.md §7.
 *
 * One work item = (batch b, KV head g): the G = Nq/Nkv query heads of g form the M rows of the
 * two matrix products (GQA). The tiling splits the B*Nkv items over the cores; per item the KV
 * positions [0, L_b) stream through UB in blocks of kvBlock positions (tail L_b % kvBlock).
 *
 *   Q.K^T and P.V: Matmul high-level API, GM -> GM (per-core workspace), K read transposed with
 *   its BSH row stride Nkv*D, V with the same stride; tails through SetTail.
 *   Vector side: TPipe / TQue double buffering, CopyIn (workspace -> UB), Compute, CopyOut.
 *
 * Dataflows (tiling key = Mode + 4 for bf16 inputs):
 *   kModeFloat / kModeQuantOut (§7.3): fp32 scores * scale, online softmax in fp32, P cast to the
 *     input dtype before P.V (fp16: CAST_ROUND, bf16: RNE), o = acc / l, output cast the same way
 *     or quant2 (§7.6).
 *   kModeInt8Fp16 / kModeInt8Int8 (§7.5): int8 Q.K^T with the fixpipe dequant word deq1 -> fp16,
 *     fp16 * fp16(scale); pass 1 finds the row max over all blocks (scores kept in the workspace),
 *     pass 2: eh = fp16_rne(exp(fp32(sh) - m)), l += fp32(eh), p8 = int8(rne(fp16(eh * fp16(qs1)))),
 *     int8 P.V -> int32 accumulated exactly, o = fp32(oi) * deq2 / l, output CAST_ROUND fp16 or quant2.
 *
 * atten_mask (1 byte per position, nonzero = masked; one row per batch or per query head): masked
 * scores are set to -inf with Select before the row max; a row whose valid positions are all
 * masked outputs 0 / quant2(0) (§9f).
 *
 * Layouts BSH / BSND (K/V row stride Nkv*D) and BNSD (stride D inside a head); K/V as one tensor
 * or tensor lists (ListTensorDesc: per-batch address and S_b). Flash-decode split (tiling splitNum
 * > 1, float paths): tasks (item, chunk of splitChunk positions) one per core write partials (acc,
 * max, sum) to the workspace; after SyncAll, CombinePartials merges them per item.
 *
 * Scope: actual_seq_lengths (int64 tensor), GQA, fp16 / bf16 / int8 inputs, atten_mask. pse, paged
 * KV, antiquant and left padding are refused by the tiling (CANN's V4 op runs them).
 */
#include "kernel_operator.h"
#include "lib/matmul_intf.h"

#include "incre_flash_attention_v2_tiling_data.h"

using namespace AscendC;
using ascend_attn::ifa::IncreFlashAttentionV2TilingData;
using ascend_attn::ifa::IfaMatmulShape;

namespace ifa_kernel {

constexpr uint32_t kBlk = 32;
constexpr uint32_t kKvAlign = 32;
constexpr uint32_t kMaxG = 64;

__aicore__ inline uint32_t AlignUp(uint32_t v, uint32_t a) { return (v + a - 1) / a * a; }

template <bool C, typename A, typename B> struct TypeSelect { using type = A; };
template <typename A, typename B> struct TypeSelect<false, A, B> { using type = B; };
template <typename A, typename B> struct IsSame { static constexpr bool value = false; };
template <typename A> struct IsSame<A, A> { static constexpr bool value = true; };

__aicore__ inline void FillCubeTiling(const IfaMatmulShape& s, TCubeTiling& c)
{
    c.usedCoreNum = 1;
    c.M = static_cast<int32_t>(s.M);
    c.N = static_cast<int32_t>(s.N);
    c.Ka = static_cast<int32_t>(s.Ka);
    c.Kb = static_cast<int32_t>(s.Kb);
    c.singleCoreM = c.M;
    c.singleCoreN = c.N;
    c.singleCoreK = c.Ka;
    c.baseM = static_cast<int32_t>(s.baseM);
    c.baseN = static_cast<int32_t>(s.baseN);
    c.baseK = static_cast<int32_t>(s.baseK);
    c.depthA1 = 1;
    c.depthB1 = 1;
    c.stepM = 1;
    c.stepN = 1;
    c.stepKa = 1;
    c.stepKb = 1;
    c.isBias = 0;
    c.iterateOrder = 0;
    c.batchM = 1;
    c.batchN = 1;
    c.singleBatchM = 1;
    c.singleBatchN = 1;
    c.dbL0A = 2;  // the tiling keeps baseM x baseK and baseK x baseN within half of L0A / L0B
    c.dbL0B = 2;
    c.dbL0C = 1;
}

__aicore__ inline float NegInf()
{
    union {
        uint32_t u;
        float f;
    } v;
    v.u = 0xFF800000u;
    return v.f;
}

// FP19 value of a dequant word / float32 bit pattern (§7.7): the fixpipe truncates to 10 mantissa bits.
__aicore__ inline float Fp19(uint32_t bits)
{
    union {
        uint32_t u;
        float f;
    } v;
    v.u = bits & 0xFFFFE000u;
    return v.f;
}

// Q_T: query/key/value type (half, bfloat16_t or int8_t); OUT_T: output type; MODE: ascend_attn::ifa::Mode.
template <typename Q_T, typename OUT_T, uint32_t MODE>
class IfaKernel {
public:
    static constexpr bool kInt8 = (MODE == ascend_attn::ifa::kModeInt8Fp16 || MODE == ascend_attn::ifa::kModeInt8Int8);
    static constexpr bool kQuantOut = (MODE == ascend_attn::ifa::kModeQuantOut || MODE == ascend_attn::ifa::kModeInt8Int8);
    using S_T = typename TypeSelect<kInt8, half, float>::type;      // mm1 result in the workspace
    using P_T = typename TypeSelect<kInt8, int8_t, Q_T>::type;      // P fed to mm2
    // fp16: CAST_ROUND (ties away, §0.5); bf16: RNE [P] — for P and for a float output
    static constexpr RoundMode kRound = IsSame<Q_T, bfloat16_t>::value ? RoundMode::CAST_RINT : RoundMode::CAST_ROUND;
    using O_T = typename TypeSelect<kInt8, int32_t, float>::type;   // mm2 result / accumulator

    using Mm1A = matmul::MatmulType<TPosition::GM, CubeFormat::ND, Q_T>;
    using Mm1B = matmul::MatmulType<TPosition::GM, CubeFormat::ND, Q_T, true>;
    using Mm1C = matmul::MatmulType<TPosition::GM, CubeFormat::ND, S_T>;
    using Mm2A = matmul::MatmulType<TPosition::GM, CubeFormat::ND, P_T>;
    using Mm2B = matmul::MatmulType<TPosition::GM, CubeFormat::ND, Q_T>;
    using Mm2C = matmul::MatmulType<TPosition::GM, CubeFormat::ND, O_T>;
    matmul::Matmul<Mm1A, Mm1B, Mm1C> mm1;
    matmul::Matmul<Mm2A, Mm2B, Mm2C> mm2;

    __aicore__ inline IfaKernel() {}

    __aicore__ inline void Init(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR actualSeqLengths,
                                GM_ADDR dequantScale1, GM_ADDR quantScale1, GM_ADDR dequantScale2,
                                GM_ADDR quantScale2, GM_ADDR quantOffset2, GM_ADDR attenMask, GM_ADDR attentionOut,
                                GM_ADDR userWs, const IncreFlashAttentionV2TilingData* td, TPipe* pipe)
    {
        td_ = td;
        pipe_ = pipe;
        g_ = td->groupSize;
        d_ = td->headDim;
        kvBlock_ = td->kvBlock;
        workElems_ = AlignUp(kvBlock_ > d_ ? kvBlock_ : d_, 8);
        const uint64_t qElems = static_cast<uint64_t>(td->batch) * td->headsQ * d_;
        const uint64_t kvElems = static_cast<uint64_t>(td->batch) * td->seqKv * td->headsKv * d_;
        qGm_.SetGlobalBuffer(reinterpret_cast<__gm__ Q_T*>(query), qElems);
        if (td->kvList) {
            // tensor lists: per-batch addresses and shapes come from the list descriptors (BindBatch)
            keyList_.Init(reinterpret_cast<__gm__ void*>(key), 0xffffffff, 0xffffffff);
            valueList_.Init(reinterpret_cast<__gm__ void*>(value), 0xffffffff, 0xffffffff);
            keyDesc_.SetGlobalBuffer(reinterpret_cast<__gm__ uint64_t*>(key));
        } else if (td->kvDesc) {
            // one (B, S, ...) tensor handed over as a list of one (DYNAMIC input)
            ListTensorDesc keys(reinterpret_cast<__gm__ void*>(key), 0xffffffff, 1);
            ListTensorDesc values(reinterpret_cast<__gm__ void*>(value), 0xffffffff, 1);
            kGm_.SetGlobalBuffer(keys.GetDataPtr<Q_T>(0), kvElems);
            vGm_.SetGlobalBuffer(values.GetDataPtr<Q_T>(0), kvElems);
        } else {
            kGm_.SetGlobalBuffer(reinterpret_cast<__gm__ Q_T*>(key), kvElems);
            vGm_.SetGlobalBuffer(reinterpret_cast<__gm__ Q_T*>(value), kvElems);
        }
        ldKv_ = td->kvBnsd ? d_ : td->headsKv * d_;
        outGm_.SetGlobalBuffer(reinterpret_cast<__gm__ OUT_T*>(attentionOut), qElems);
        if (td->seqLenCount > 0) {
            seqLenGm_.SetGlobalBuffer(reinterpret_cast<__gm__ int64_t*>(actualSeqLengths), td->seqLenCount);
        }
        if constexpr (kInt8) {
            // dequant words: uint64 (trans_quant_param) or a float32 value read as its bit pattern
            if (td->deqIsFloat) {
                GlobalTensor<uint32_t> d1, d2;
                d1.SetGlobalBuffer(reinterpret_cast<__gm__ uint32_t*>(dequantScale1), 1);
                d2.SetGlobalBuffer(reinterpret_cast<__gm__ uint32_t*>(dequantScale2), 1);
                deqWord1_ = d1.GetValue(0);
                deqWord2_ = d2.GetValue(0);
            } else {
                GlobalTensor<uint64_t> d1, d2;
                d1.SetGlobalBuffer(reinterpret_cast<__gm__ uint64_t*>(dequantScale1), 1);
                d2.SetGlobalBuffer(reinterpret_cast<__gm__ uint64_t*>(dequantScale2), 1);
                deqWord1_ = d1.GetValue(0);
                deqWord2_ = d2.GetValue(0);
            }
            deq2_ = Fp19(static_cast<uint32_t>(deqWord2_ & 0xFFFFFFFFull));
            GlobalTensor<float> qs1;
            qs1.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(quantScale1), 1);
            quantScale1H_ = static_cast<half>(qs1.GetValue(0));
            scaleH_ = static_cast<half>(td->scaleValue);
        }
        if constexpr (kQuantOut) {
            const uint64_t n = td->quantPerChannel ? static_cast<uint64_t>(td->headsQ) * d_ : 1;
            qs2Gm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(quantScale2), n);
            if (td->hasQuantOffset) {
                qo2Gm_.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(quantOffset2), n);
            }
            if (!td->quantPerChannel) {
                qs2H_ = static_cast<half>(qs2Gm_.GetValue(0));
                qo2H_ = td->hasQuantOffset ? static_cast<half>(qo2Gm_.GetValue(0)) : static_cast<half>(0.0f);
            }
        }
        if (td->hasMask) {
            maskGm_.SetGlobalBuffer(reinterpret_cast<__gm__ uint8_t*>(attenMask));
        }
        userWs_ = userWs;
        // per-core workspace
        const uint64_t wsBase = static_cast<uint64_t>(GetBlockIdx()) * td->wsPerCore;
        const uint64_t scoreElems = static_cast<uint64_t>(g_) * (kInt8 ? td->seqKvAlign : kvBlock_);
        wsScore_.SetGlobalBuffer(reinterpret_cast<__gm__ S_T*>(userWs + wsBase + td->wsScoreOffset), scoreElems);
        wsProb_.SetGlobalBuffer(reinterpret_cast<__gm__ P_T*>(userWs + wsBase + td->wsProbOffset),
                                static_cast<uint64_t>(g_) * kvBlock_);
        wsMm2_.SetGlobalBuffer(reinterpret_cast<__gm__ O_T*>(userWs + wsBase + td->wsMm2Offset),
                               static_cast<uint64_t>(g_) * d_);
        InitBuffers();
    }

    __aicore__ inline void Process()
    {
        const uint32_t core = GetBlockIdx();
        if (td_->splitNum > 1) {
            ProcessSplit(core);
            return;
        }
        if (core >= td_->usedCoreNum) {
            return;
        }
        uint32_t first, count;
        if (core < td_->formerCoreNum) {
            count = td_->itemsPerCore;
            first = core * count;
        } else {
            count = td_->itemsPerCore - 1;
            first = td_->formerCoreNum * td_->itemsPerCore + (core - td_->formerCoreNum) * count;
        }
        for (uint32_t item = first; item < first + count; ++item) {
            const uint32_t b = item / td_->headsKv;
            const uint32_t g = item % td_->headsKv;
            BindBatch(b);
            const uint32_t len = SeqLen(b);
            LocalTensor<float> o = oBuf_.Get<float>();
            if (len == 0) {
                Duplicate(o, 0.0f, g_ * d_);  // empty batch: 0 / quant2(0) (§7.2)
            } else if constexpr (kInt8) {
                ProcessInt8(b, g, len);
            } else {
                ProcessFloat(b, g, 0, len);
                FinishRows(accBuf_.Get<float>());
            }
            CopyOutRows(b, g);
        }
    }

    // Flash-decode split (tiling splitNum > 1, float paths): task = core = (item, split s) computes the
    // positions [s * splitChunk, (s + 1) * splitChunk) of its item into an unnormalised partial
    // (acc, row max, row sum) in the workspace; after SyncAll the items are combined, round robin
    // over the cores.
    __aicore__ inline void ProcessSplit(uint32_t core)
    {
        if constexpr (!kInt8) {
            const uint32_t items = td_->batch * td_->headsKv;
            if (core < td_->usedCoreNum) {
                const uint32_t item = core / td_->splitNum, split = core % td_->splitNum;
                const uint32_t b = item / td_->headsKv, g = item % td_->headsKv;
                BindBatch(b);
                const uint32_t len = SeqLen(b);
                const uint32_t p0 = split * td_->splitChunk;
                const uint32_t p1 = p0 + td_->splitChunk < len ? p0 + td_->splitChunk : len;
                LocalTensor<float> acc = accBuf_.Get<float>();
                if (p0 < p1) {
                    ProcessFloat(b, g, p0, p1);
                } else {
                    Duplicate(acc, 0.0f, g_ * d_);  // nothing in range: l = 0, m = -inf
                    for (uint32_t i = 0; i < g_; ++i) {
                        rowMax_[i] = NegInf();
                        rowSum_[i] = 0.0f;
                    }
                }
                WritePartial(core, acc);
            }
            PipeBarrier<PIPE_ALL>();
            SyncAll();  // every partial in GM before any combine
            for (uint32_t item = core; item < items; item += GetBlockNum()) {
                CombinePartials(item);
                CopyOutRows(item / td_->headsKv, item % td_->headsKv);
            }
        }
    }

private:
    // ---------------------------------------------------------------------------------- setup
    __aicore__ inline void InitBuffers()
    {
        // keep in step with ascend_attn::ifa::IfaUbBytes (op_host tiling)
        const uint32_t gn = g_ * kvBlock_, gd = g_ * d_;
        pipe_->InitBuffer(inScore_, 2, AlignUp(gn * sizeof(S_T), kBlk));
        pipe_->InitBuffer(outProb_, 2, AlignUp(gn * sizeof(P_T), kBlk));
        pipe_->InitBuffer(inMm2_, 2, AlignUp(gd * 4, kBlk));
        pipe_->InitBuffer(accBuf_, AlignUp(gd * 4, kBlk));
        pipe_->InitBuffer(oBuf_, AlignUp(gd * 4, kBlk));
        pipe_->InitBuffer(tmpFBuf_, AlignUp(gn * 4, kBlk));
        pipe_->InitBuffer(tmpHBuf_, AlignUp(gn * 2, kBlk));
        pipe_->InitBuffer(workBuf_, workElems_ * 4 + kBlk);
        pipe_->InitBuffer(outQueue_, 1, AlignUp(gd * 2, kBlk));
        pipe_->InitBuffer(quantHBuf_, AlignUp(gd * 2, kBlk));
        if (kQuantOut && td_->quantPerChannel) {
            pipe_->InitBuffer(qScaleBuf_, AlignUp(gd * 4, kBlk));
            pipe_->InitBuffer(qOffsetBuf_, AlignUp(gd * 4, kBlk));
        }
        if (td_->splitNum > 1) {
            pipe_->InitBuffer(partBuf_, AlignUp((gd + 2 * AlignUp(g_, 8)) * 4, kBlk));
        }
        if (td_->hasMask) {
            pipe_->InitBuffer(maskU8Buf_, AlignUp(kvBlock_, kBlk));
            pipe_->InitBuffer(maskHBuf_, AlignUp(kvBlock_ * 2, kBlk));
            pipe_->InitBuffer(maskBitsBuf_, AlignUp((kvBlock_ + 7) / 8, kBlk));
        }
        TCubeTiling t1{}, t2{};
        FillCubeTiling(td_->mm1, t1);
        FillCubeTiling(td_->mm2, t2);
        mmTiling1_ = t1;
        mmTiling2_ = t2;
        REGIST_MATMUL_OBJ(pipe_, GetSysWorkSpacePtr(), mm1, &mmTiling1_, mm2, &mmTiling2_);
    }

    // K/V of batch b: with tensor lists, its tensor's address and S_b (from the list descriptors: a
    // header word, then per tensor a word "dim count | index << 32" and its dims, then the addresses);
    // with one tensor, S of the whole K/V.
    __aicore__ inline void BindBatch(uint32_t b)
    {
        if (!td_->kvList) {
            seqB_ = td_->seqKv;
            return;
        }
        const uint32_t dims = static_cast<uint32_t>(keyDesc_.GetValue(1) & 0xffffffffull);
        // S_b: dim 1 of (1, S, H) / (1, S, N, D), dim 2 of (1, N, S, D)
        seqB_ = static_cast<uint32_t>(keyDesc_.GetValue(1 + static_cast<uint64_t>(b) * (1 + dims) + 1 +
                                                        (td_->kvBnsd ? 2 : 1)));
        const uint64_t elems = static_cast<uint64_t>(seqB_) * td_->headsKv * d_;
        kGm_.SetGlobalBuffer(keyList_.template GetDataPtr<Q_T>(b), elems);
        vGm_.SetGlobalBuffer(valueList_.template GetDataPtr<Q_T>(b), elems);
    }

    __aicore__ inline uint32_t SeqLen(uint32_t b) const
    {
        if (td_->seqLenCount == 0) {
            return seqB_;
        }
        int64_t len = seqLenGm_.GetValue(td_->seqLenCount == 1 ? 0 : b);
        if (len < 0) {
            len = 0;
        }
        return len > static_cast<int64_t>(seqB_) ? seqB_ : static_cast<uint32_t>(len);
    }

    __aicore__ inline uint64_t QOffset(uint32_t b, uint32_t g) const
    {
        return (static_cast<uint64_t>(b) * td_->headsQ + static_cast<uint64_t>(g) * g_) * d_;
    }
    // Row `pos` of KV head g (batch b) in kGm_ / vGm_ (BindBatch(b) done): BSH / BSND rows of Nkv*D,
    // BNSD heads of S*D; a tensor list holds one batch per tensor.
    __aicore__ inline uint64_t KvOffset(uint32_t b, uint32_t g, uint32_t pos) const
    {
        const uint64_t batch = td_->kvList ? 0 : b;
        if (td_->kvBnsd) {
            return ((batch * td_->headsKv + g) * seqB_ + pos) * d_;
        }
        return (batch * seqB_ + pos) * td_->headsKv * d_ + static_cast<uint64_t>(g) * d_;
    }

    // --------------------------------------------------------------------------- matrix products
    // scores[G, n] = Q[G, D] . K[p0:p0+n, D]^T, written with row stride `ldc` at `dst`.
    __aicore__ inline void Mm1(uint32_t b, uint32_t g, uint32_t p0, uint32_t n, const GlobalTensor<S_T>& dst, uint32_t ldc)
    {
        const uint32_t ldk = ldKv_;
        mm1.SetOrgShape(g_, ldc, d_, ldk, ldc);
        mm1.SetSingleShape(g_, n, d_);
        if constexpr (kInt8) {
            mm1.SetQuantScalar(deqWord1_);
        }
        mm1.SetTensorA(qGm_[QOffset(b, g)]);
        mm1.SetTensorB(kGm_[KvOffset(b, g, p0)], true);
        mm1.IterateAll(dst);
        mm1.End();
    }

    // o[G, D] = P[G, n] (row stride kvBlock, workspace) . V[p0:p0+n, D]
    __aicore__ inline void Mm2(uint32_t b, uint32_t g, uint32_t p0, uint32_t n)
    {
        const uint32_t ldv = ldKv_;
        mm2.SetOrgShape(g_, ldv, kvBlock_, kvBlock_, d_);
        mm2.SetSingleShape(g_, d_, n);
        mm2.SetTensorA(wsProb_);
        mm2.SetTensorB(vGm_[KvOffset(b, g, p0)]);
        mm2.IterateAll(wsMm2_);
        mm2.End();
    }

    // ------------------------------------------------------------------------------- copies
    // G rows of nA elements from the workspace (row stride ld) into the inScore queue.
    __aicore__ inline void CopyInScores(const GlobalTensor<S_T>& src, uint32_t nA, uint32_t ld)
    {
        LocalTensor<S_T> s = inScore_.template AllocTensor<S_T>();
        DataCopyParams p;
        p.blockCount = static_cast<uint16_t>(g_);
        p.blockLen = static_cast<uint16_t>(nA * sizeof(S_T) / kBlk);
        p.srcStride = static_cast<uint16_t>((ld - nA) * sizeof(S_T) / kBlk);
        p.dstStride = 0;
        DataCopy(s, src, p);
        inScore_.EnQue(s);
    }

    // P rows (G x nA, contiguous in UB) to the workspace with row stride kvBlock.
    __aicore__ inline void CopyOutProb(uint32_t nA)
    {
        LocalTensor<P_T> p = outProb_.template DeQue<P_T>();
        DataCopyParams c;
        c.blockCount = static_cast<uint16_t>(g_);
        c.blockLen = static_cast<uint16_t>(nA * sizeof(P_T) / kBlk);
        c.srcStride = 0;
        c.dstStride = static_cast<uint16_t>((kvBlock_ - nA) * sizeof(P_T) / kBlk);
        DataCopy(wsProb_, p, c);
        outProb_.FreeTensor(p);
        // P must be in GM before the cube reads it
        event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::MTE3_MTE2));
        SetFlag<HardEvent::MTE3_MTE2>(ev);
        WaitFlag<HardEvent::MTE3_MTE2>(ev);
    }

    __aicore__ inline void CopyInMm2()
    {
        LocalTensor<O_T> o = inMm2_.template AllocTensor<O_T>();
        DataCopy(o, wsMm2_, g_ * d_);
        inMm2_.EnQue(o);
    }

    __aicore__ inline float ScalarAfterVector(const LocalTensor<float>& t, uint32_t i)
    {
        event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::V_S));
        SetFlag<HardEvent::V_S>(ev);
        WaitFlag<HardEvent::V_S>(ev);
        return t.GetValue(i);
    }
    __aicore__ inline void VectorAfterScalar()
    {
        event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::S_V));
        SetFlag<HardEvent::S_V>(ev);
        WaitFlag<HardEvent::S_V>(ev);
    }

    // ------------------------------------------------------------------------ atten_mask
    // Positions [p0, p0 + n) of the mask row of (batch b, query head g*G + i) as compare bits
    // (1 = kept). One row per batch (maskHeadStride 0) is loaded once per block (row i == 0).
    __aicore__ inline void LoadMaskBits(uint32_t b, uint32_t h, uint32_t p0, uint32_t n, uint32_t nA)
    {
        LocalTensor<uint8_t> mu = maskU8Buf_.Get<uint8_t>();
        const uint64_t off = b * td_->maskBatchStride + h * td_->maskHeadStride + p0;
        DataCopyExtParams cp(1, n, 0, 0, 0);
        DataCopyPadExtParams<uint8_t> pad{false, 0, 0, 0};
        DataCopyPad(mu, maskGm_[off], cp, pad);  // any byte offset / length; bytes [n, nA) unspecified
        event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::MTE2_V));
        SetFlag<HardEvent::MTE2_V>(ev);
        WaitFlag<HardEvent::MTE2_V>(ev);
        LocalTensor<half> mh = maskHBuf_.Get<half>();
        Cast(mh, mu, RoundMode::CAST_NONE, nA);
        LocalTensor<uint8_t> bits = maskBitsBuf_.Get<uint8_t>();
        CompareScalar(bits, mh, static_cast<half>(0.0f), CMPMODE::EQ, nA);
    }

    // masked scores -> -inf (row of n elements, float or half)
    template <typename T>
    __aicore__ inline void MaskRow(const LocalTensor<T>& row, uint32_t b, uint32_t g, uint32_t i, uint32_t p0,
                                   uint32_t n, uint32_t nA)
    {
        if (!td_->hasMask) {
            return;
        }
        if (i == 0 || td_->maskHeadStride != 0) {
            LoadMaskBits(b, g * g_ + i, p0, n, nA);
        }
        Select(row, maskBitsBuf_.Get<uint8_t>(), row, static_cast<T>(NegInf()), SELMODE::VSEL_TENSOR_SCALAR_MODE, n);
    }

    // ------------------------------------------------------------------- float path (§7.3)
    // Positions [begin, end) of item (b, g) into acc (unnormalised), rowMax_ and rowSum_.
    __aicore__ inline void ProcessFloat(uint32_t b, uint32_t g, uint32_t begin, uint32_t end)
    {
        LocalTensor<float> acc = accBuf_.Get<float>();
        Duplicate(acc, 0.0f, g_ * d_);
        for (uint32_t i = 0; i < g_; ++i) {
            rowMax_[i] = NegInf();
            rowSum_[i] = 0.0f;
        }
        const uint32_t blocks = (end - begin + kvBlock_ - 1) / kvBlock_;
        for (uint32_t blk = 0; blk < blocks; ++blk) {
            const uint32_t p0 = begin + blk * kvBlock_;
            const uint32_t n = (blk + 1 == blocks) ? end - p0 : kvBlock_;  // tail block
            const uint32_t nA = AlignUp(n, kKvAlign);
            Mm1(b, g, p0, n, wsScore_, kvBlock_);
            CopyInScores(wsScore_, nA, kvBlock_);
            ComputeSoftmaxFloat(b, g, p0, n, nA);
            CopyOutProb(nA);
            Mm2(b, g, p0, n);
            CopyInMm2();
            ComputeUpdateFloat();
        }
    }

    // Task `task`'s partial: acc [G, D] fp32, then row max and row sum (G each, 8-aligned).
    __aicore__ inline void WritePartial(uint32_t task, const LocalTensor<float>& acc)
    {
        const uint32_t gA = AlignUp(g_, 8);
        GlobalTensor<float> part;
        part.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs_ + td_->wsSplitOffset + task * td_->wsSplitBytes),
                             static_cast<uint64_t>(g_) * d_ + 2 * gA);
        LocalTensor<float> stats = partBuf_.Get<float>()[g_ * d_];  // G maxima then G sums, through UB
        for (uint32_t i = 0; i < g_; ++i) {
            stats.SetValue(i, rowMax_[i]);
            stats.SetValue(gA + i, rowSum_[i]);
        }
        VectorAfterScalar();
        event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::V_MTE3));
        SetFlag<HardEvent::V_MTE3>(ev);
        WaitFlag<HardEvent::V_MTE3>(ev);
        DataCopyExtParams cpAcc{1, static_cast<uint32_t>(g_ * d_ * sizeof(float)), 0, 0, 0};
        DataCopyPad(part, acc, cpAcc);
        DataCopyExtParams cpStats{1, static_cast<uint32_t>(2 * gA * sizeof(float)), 0, 0, 0};
        DataCopyPad(part[static_cast<uint64_t>(g_) * d_], stats, cpStats);
    }

    // o = sum_s acc_s e^(m_s - m) / sum_s l_s e^(m_s - m), m = max_s m_s, into oBuf_ (as FinishRows).
    __aicore__ inline void CombinePartials(uint32_t item)
    {
        const uint32_t gA = AlignUp(g_, 8), gd = g_ * d_;
        LocalTensor<float> acc = accBuf_.Get<float>();
        LocalTensor<float> part = partBuf_.Get<float>();  // G*D partial + G maxima + G sums
        LocalTensor<float> red = tmpFBuf_.Get<float>();     // 16 lanes (tmpF holds G * kvBlock >= 32)
        Duplicate(acc, 0.0f, gd);
        for (uint32_t i = 0; i < g_; ++i) {
            rowMax_[i] = NegInf();
            rowSum_[i] = 0.0f;
        }
        for (uint32_t s = 0; s < td_->splitNum; ++s) {
            const uint32_t task = item * td_->splitNum + s;
            GlobalTensor<float> src;
            src.SetGlobalBuffer(reinterpret_cast<__gm__ float*>(userWs_ + td_->wsSplitOffset + task * td_->wsSplitBytes),
                                static_cast<uint64_t>(gd) + 2 * gA);
            DataCopyExtParams cp{1, static_cast<uint32_t>((gd + 2 * gA) * sizeof(float)), 0, 0, 0};
            DataCopyPad(part, src, cp, DataCopyPadExtParams<float>{false, 0, 0, 0.0f});
            event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::MTE2_S));
            SetFlag<HardEvent::MTE2_S>(ev);
            WaitFlag<HardEvent::MTE2_S>(ev);
            for (uint32_t i = 0; i < g_; ++i) {
                const float mS = part.GetValue(gd + i), lS = part.GetValue(gd + gA + i);
                if (mS == NegInf()) {
                    continue;  // empty or fully masked split: contributes nothing
                }
                const float mOld = rowMax_[i];
                const float mNew = mS > mOld ? mS : mOld;
                // weights e^(mOld - mNew) for what is accumulated, e^(mS - mNew) for the split
                VectorAfterScalar();
                Duplicate(red, mOld == NegInf() ? 0.0f : mOld - mNew, 8);
                Duplicate(red[8], mS - mNew, 8);
                Exp(red, red, 16);
                const float wOld = mOld == NegInf() ? 0.0f : ScalarAfterVector(red, 0);
                const float wS = ScalarAfterVector(red, 8);
                rowMax_[i] = mNew;
                rowSum_[i] = rowSum_[i] * wOld + lS * wS;
                VectorAfterScalar();
                Muls(acc[i * d_], acc[i * d_], wOld, d_);
                Muls(part[i * d_], part[i * d_], wS, d_);
                Add(acc[i * d_], acc[i * d_], part[i * d_], d_);
            }
            PipeBarrier<PIPE_V>();
        }
        FinishRows(acc);
    }

    // scores -> scaled, online-softmax statistics, P = CAST_ROUND(exp(s - m)) (fp16)
    __aicore__ inline void ComputeSoftmaxFloat(uint32_t b, uint32_t g, uint32_t p0, uint32_t n, uint32_t nA)
    {
        LocalTensor<float> s = inScore_.template DeQue<float>();
        LocalTensor<P_T> p = outProb_.template AllocTensor<P_T>();
        LocalTensor<float> work = workBuf_.Get<float>();
        LocalTensor<float> red = work[workElems_];
        for (uint32_t i = 0; i < g_; ++i) {
            LocalTensor<float> row = s[i * nA];
            Muls(row, row, td_->scaleValue, n);
            MaskRow(row, b, g, i, p0, n, nA);
            ReduceMax(red, row, work, n);
            const float blockMax = ScalarAfterVector(red, 0);
            const float mOld = rowMax_[i];
            const float mNew = blockMax > mOld ? blockMax : mOld;  // -inf while every position is masked
            rowMax_[i] = mNew;
            const float base = mNew == NegInf() ? 0.0f : mNew;     // masked: exp(-inf - base) = 0
            VectorAfterScalar();
            // alpha = exp(mOld - mNew) through the vector unit (no scalar exp)
            if (mOld == NegInf()) {
                alpha_[i] = 0.0f;
            } else {
                Duplicate(red, mOld - mNew, 8);
                Exp(red, red, 8);
                alpha_[i] = ScalarAfterVector(red, 0);
                VectorAfterScalar();
            }
            Adds(row, row, -base, n);
            Exp(row, row, n);
            ReduceSum(red, row, work, n);
            const float blockSum = ScalarAfterVector(red, 0);
            rowSum_[i] = rowSum_[i] * alpha_[i] + blockSum;
            VectorAfterScalar();
            Cast(p[i * nA], row, kRound, n);
        }
        inScore_.FreeTensor(s);
        outProb_.EnQue(p);
    }

    // acc = acc * alpha + P.V
    __aicore__ inline void ComputeUpdateFloat()
    {
        LocalTensor<float> o = inMm2_.template DeQue<float>();
        LocalTensor<float> acc = accBuf_.Get<float>();
        for (uint32_t i = 0; i < g_; ++i) {
            Muls(acc[i * d_], acc[i * d_], alpha_[i], d_);
            Add(acc[i * d_], acc[i * d_], o[i * d_], d_);
        }
        inMm2_.FreeTensor(o);
    }

    // o = acc / l per row (float), into oBuf_
    __aicore__ inline void FinishRows(const LocalTensor<float>& acc)
    {
        LocalTensor<float> o = oBuf_.Get<float>();
        LocalTensor<float> tmp = workBuf_.Get<float>();
        for (uint32_t i = 0; i < g_; ++i) {
            if (rowSum_[i] == 0.0f) {  // every valid position masked: 0 (§9f)
                Duplicate(o[i * d_], 0.0f, d_);
                continue;
            }
            Duplicate(tmp, rowSum_[i], d_);
            Div(o[i * d_], acc[i * d_], tmp, d_);
        }
    }

    // ------------------------------------------------------------------ full int8 (§7.5)
    __aicore__ inline void ProcessInt8(uint32_t b, uint32_t g, uint32_t len)
    {
        const uint32_t blocks = (len + kvBlock_ - 1) / kvBlock_;
        const uint32_t ld = td_->seqKvAlign;
        for (uint32_t i = 0; i < g_; ++i) {
            rowMax_[i] = NegInf();
        }
        // pass 1: all scores (fp16) into the workspace, row max
        for (uint32_t blk = 0; blk < blocks; ++blk) {
            const uint32_t p0 = blk * kvBlock_;
            const uint32_t n = (blk + 1 == blocks) ? len - p0 : kvBlock_;
            const uint32_t nA = AlignUp(n, kKvAlign);
            Mm1(b, g, p0, n, wsScore_[p0], ld);
            CopyInScores(wsScore_[p0], nA, ld);
            ComputeMaxInt8(b, g, p0, n, nA);
        }
        // pass 2: probabilities, quantised P, exact int32 P.V
        LocalTensor<int32_t> acc = accBuf_.Get<int32_t>();
        Duplicate(acc, static_cast<int32_t>(0), g_ * d_);
        for (uint32_t i = 0; i < g_; ++i) {
            rowSum_[i] = 0.0f;
        }
        for (uint32_t blk = 0; blk < blocks; ++blk) {
            const uint32_t p0 = blk * kvBlock_;
            const uint32_t n = (blk + 1 == blocks) ? len - p0 : kvBlock_;
            const uint32_t nA = AlignUp(n, kKvAlign);
            CopyInScores(wsScore_[p0], nA, ld);
            ComputeProbInt8(b, g, p0, n, nA);
            CopyOutProb(nA);
            Mm2(b, g, p0, n);
            CopyInMm2();
            LocalTensor<int32_t> o = inMm2_.template DeQue<int32_t>();
            Add(acc, acc, o, g_ * d_);
            inMm2_.FreeTensor(o);
        }
        // o = fp32(oi) * deq2 / l
        LocalTensor<float> o = oBuf_.Get<float>();
        Cast(o, acc, RoundMode::CAST_NONE, g_ * d_);  // int32 -> fp32 RNE, like fp32(oi) in §7.5
        Muls(o, o, deq2_, g_ * d_);
        LocalTensor<float> tmp = workBuf_.Get<float>();
        for (uint32_t i = 0; i < g_; ++i) {
            if (rowSum_[i] == 0.0f) {  // every valid position masked: 0 / quant2(0) (§9f)
                Duplicate(o[i * d_], 0.0f, d_);
                continue;
            }
            Duplicate(tmp, rowSum_[i], d_);
            Div(o[i * d_], o[i * d_], tmp, d_);
        }
    }

    __aicore__ inline void ComputeMaxInt8(uint32_t b, uint32_t g, uint32_t p0, uint32_t n, uint32_t nA)
    {
        LocalTensor<half> s = inScore_.template DeQue<half>();
        LocalTensor<half> work = workBuf_.Get<half>();
        LocalTensor<half> red = work[workElems_ * 2];
        for (uint32_t i = 0; i < g_; ++i) {
            LocalTensor<half> row = s[i * nA];
            Muls(row, row, scaleH_, n);
            MaskRow(row, b, g, i, p0, n, nA);
            ReduceMax(red, row, work, n);
            event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::V_S));
            SetFlag<HardEvent::V_S>(ev);
            WaitFlag<HardEvent::V_S>(ev);
            const float m = static_cast<float>(red.GetValue(0));
            if (m > rowMax_[i]) {
                rowMax_[i] = m;
            }
        }
        inScore_.FreeTensor(s);
    }

    __aicore__ inline void ComputeProbInt8(uint32_t b, uint32_t g, uint32_t p0, uint32_t n, uint32_t nA)
    {
        LocalTensor<half> s = inScore_.template DeQue<half>();
        LocalTensor<int8_t> p = outProb_.template AllocTensor<int8_t>();
        LocalTensor<float> f = tmpFBuf_.Get<float>();
        LocalTensor<half> h = tmpHBuf_.Get<half>();
        LocalTensor<float> work = workBuf_.Get<float>();
        LocalTensor<float> red = work[workElems_];
        for (uint32_t i = 0; i < g_; ++i) {
            LocalTensor<half> row = s[i * nA];
            Muls(row, row, scaleH_, n);                     // sh = fp16(sh * fp16(scale))
            MaskRow(row, b, g, i, p0, n, nA);               // masked -> -inf -> eh = 0
            Cast(f, row, RoundMode::CAST_NONE, n);          // exact
            const float base = rowMax_[i] == NegInf() ? 0.0f : rowMax_[i];
            Adds(f, f, -base, n);                           // fp32(sh) - fp32(m)
            Exp(f, f, n);
            Cast(h, f, RoundMode::CAST_RINT, n);            // eh = fp16_rne(exp(.))
            Cast(f, h, RoundMode::CAST_NONE, n);
            ReduceSum(red, f, work, n);                     // l += sum fp32(eh)
            rowSum_[i] += ScalarAfterVector(red, 0);
            VectorAfterScalar();
            Muls(h, h, quantScale1H_, n);                   // fp16(eh * fp16(qs1))
            Cast(p[i * nA], h, RoundMode::CAST_RINT, n);    // int8_sat(rne(.))
        }
        inScore_.FreeTensor(s);
        outProb_.EnQue(p);
    }

    // ------------------------------------------------------------------------------ output
    __aicore__ inline void CopyOutRows(uint32_t b, uint32_t g)
    {
        const uint32_t gd = g_ * d_;
        LocalTensor<float> o = oBuf_.Get<float>();
        LocalTensor<OUT_T> out = outQueue_.template AllocTensor<OUT_T>();
        if constexpr (kQuantOut) {
            LocalTensor<half> h = quantHBuf_.Get<half>();
            if (td_->quantPerChannel) {
                // fp32: y = o * sc[c] (+ off[c]); int8(round_half_away(half_away16(y)))  (§7.6)
                LocalTensor<float> sc = qScaleBuf_.Get<float>();
                const uint64_t c0 = static_cast<uint64_t>(g) * gd;  // channel h*D + e of query head h
                DataCopy(sc, qs2Gm_[c0], gd);
                event_t ev = static_cast<event_t>(pipe_->FetchEventID(HardEvent::MTE2_V));
                if (td_->hasQuantOffset) {
                    LocalTensor<float> off = qOffsetBuf_.Get<float>();
                    DataCopy(off, qo2Gm_[c0], gd);
                    SetFlag<HardEvent::MTE2_V>(ev);
                    WaitFlag<HardEvent::MTE2_V>(ev);
                    Mul(o, o, sc, gd);
                    Add(o, o, off, gd);
                } else {
                    SetFlag<HardEvent::MTE2_V>(ev);
                    WaitFlag<HardEvent::MTE2_V>(ev);
                    Mul(o, o, sc, gd);
                }
                Cast(h, o, RoundMode::CAST_ROUND, gd);
                Cast(out, h, RoundMode::CAST_ROUND, gd);
            } else {
                // fp16: x = fp16_rne(o); y = fp16(x * sc); y = fp16(y + off); int8(rne(y))
                Cast(h, o, RoundMode::CAST_RINT, gd);
                Muls(h, h, qs2H_, gd);
                if (td_->hasQuantOffset) {
                    Adds(h, h, qo2H_, gd);
                }
                Cast(out, h, RoundMode::CAST_RINT, gd);
            }
        } else {
            Cast(out, o, kRound, gd);  // float output: fp16 ties away, bf16 RNE (§0.5)
        }
        outQueue_.EnQue(out);
        LocalTensor<OUT_T> res = outQueue_.template DeQue<OUT_T>();
        DataCopy(outGm_[QOffset(b, g)], res, gd);
        outQueue_.FreeTensor(res);
    }

    // ------------------------------------------------------------------------------- state
    const IncreFlashAttentionV2TilingData* td_ = nullptr;
    TPipe* pipe_ = nullptr;
    uint32_t g_ = 0, d_ = 0, kvBlock_ = 0, workElems_ = 0;
    uint32_t seqB_ = 0;   // S of the K/V tensor of the batch being processed (BindBatch)
    uint32_t ldKv_ = 0;   // K/V row stride: Nkv*D (BSH / BSND) or D (BNSD)
    GM_ADDR userWs_ = nullptr;
    ListTensorDesc keyList_, valueList_;
    GlobalTensor<uint64_t> keyDesc_;
    uint64_t deqWord1_ = 0, deqWord2_ = 0;
    float deq2_ = 0.0f;
    half scaleH_ = 0, quantScale1H_ = 0, qs2H_ = 0, qo2H_ = 0;
    float rowMax_[kMaxG];
    float rowSum_[kMaxG];
    float alpha_[kMaxG];
    TCubeTiling mmTiling1_, mmTiling2_;

    GlobalTensor<Q_T> qGm_, kGm_, vGm_;
    GlobalTensor<OUT_T> outGm_;
    GlobalTensor<int64_t> seqLenGm_;
    GlobalTensor<float> qs2Gm_, qo2Gm_;
    GlobalTensor<S_T> wsScore_;
    GlobalTensor<P_T> wsProb_;
    GlobalTensor<O_T> wsMm2_;

    TQue<QuePosition::VECIN, 2> inScore_;
    TQue<QuePosition::VECOUT, 2> outProb_;
    TQue<QuePosition::VECIN, 2> inMm2_;
    TQue<QuePosition::VECOUT, 1> outQueue_;
    TBuf<TPosition::VECCALC> accBuf_, oBuf_, tmpFBuf_, tmpHBuf_, workBuf_, quantHBuf_, qScaleBuf_, qOffsetBuf_;
    TBuf<TPosition::VECCALC> maskU8Buf_, maskHBuf_, maskBitsBuf_, partBuf_;
    GlobalTensor<uint8_t> maskGm_;
};

template <typename Q_T, typename OUT_T, uint32_t MODE>
__aicore__ inline void Run(GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR actualSeqLengths, GM_ADDR dequantScale1,
                           GM_ADDR quantScale1, GM_ADDR dequantScale2, GM_ADDR quantScale2, GM_ADDR quantOffset2,
                           GM_ADDR attenMask, GM_ADDR attentionOut, GM_ADDR userWs,
                           const IncreFlashAttentionV2TilingData* td)
{
    TPipe pipe;
    IfaKernel<Q_T, OUT_T, MODE> op;
    op.Init(query, key, value, actualSeqLengths, dequantScale1, quantScale1, dequantScale2, quantScale2, quantOffset2,
            attenMask, attentionOut, userWs, td, &pipe);
    op.Process();
}

}  // namespace ifa_kernel

// Parameter order = OpDef inputs (op_host/incre_flash_attention_v2_def.cpp), outputs, workspace, tiling.
extern "C" __global__ __aicore__ void ascend_attn_incre_flash_attention_v2(
    GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR pseShift, GM_ADDR attenMask, GM_ADDR actualSeqLengths,
    GM_ADDR dequantScale1, GM_ADDR quantScale1, GM_ADDR dequantScale2, GM_ADDR quantScale2, GM_ADDR quantOffset2,
    GM_ADDR attentionOut, GM_ADDR workspace, GM_ADDR tiling)
{
    // Q.K^T and P.V run on the cube (AIC), softmax / quantisation on the vector core (AIV): MIX 1:1.
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_MIX_AIC_1_1);
    (void)pseShift;
    GET_TILING_DATA_WITH_STRUCT(IncreFlashAttentionV2TilingData, td, tiling);
    GM_ADDR userWs = GetUserWorkspace(workspace);
    if (userWs == nullptr) {
        return;
    }
#define IFA_RUN(Q, O, M)                                                                                     \
    ifa_kernel::Run<Q, O, ascend_attn::ifa::M>(query, key, value, actualSeqLengths, dequantScale1, quantScale1, \
                                               dequantScale2, quantScale2, quantOffset2, attenMask, attentionOut,    \
                                               userWs, &td)
    if (TILING_KEY_IS(0)) {
        IFA_RUN(half, half, kModeFloat);
    } else if (TILING_KEY_IS(1)) {
        IFA_RUN(half, int8_t, kModeQuantOut);
    } else if (TILING_KEY_IS(2)) {
        IFA_RUN(int8_t, half, kModeInt8Fp16);
    } else if (TILING_KEY_IS(3)) {
        IFA_RUN(int8_t, int8_t, kModeInt8Int8);
    } else if (TILING_KEY_IS(4)) {
        IFA_RUN(bfloat16_t, bfloat16_t, kModeFloat);
    } else if (TILING_KEY_IS(5)) {
        IFA_RUN(bfloat16_t, int8_t, kModeQuantOut);
    }
#undef IFA_RUN
}
