/*
 * RingAttentionUpdate kernel (AscendC, vector cores only).
 *
 * Per query row, in fp32 (semantics.md §1):
 *   m  = max(prev_max, cur_max)                                 per lane (8 lanes)
 *   sp = prev_sum * exp(prev_max - m),  sc = cur_sum * exp(cur_max - m),  s = sp + sc
 *   out = fp32(prev_attn) * (sp / s) + fp32(cur_attn) * (sc / s)  weights of lane 0
 *   attn_out = RNE(out) in the attention dtype; softmax_max = m; softmax_sum = s
 *
 * Work split (tiling: op_host/ring_attention_update_tiling.cpp): every core owns a contiguous
 * range of statistics rows. A UB iteration copies `rows` statistics rows (contiguous in GM for
 * every layout) plus the matching attention rows (one strided DataCopyPad per tensor, the rows
 * of a tile share one GM stride), in column chunks when the head dim does not fit the UB.
 * Queues are double buffered (BUFFER_NUM = 2) so that MTE2/V/MTE3 overlap on the device.
 *
 * The same source compiles for the NPU (CANN) and for the host simulation (host_sim/).
 */
#include "kernel_operator.h"
#include "ring_attention_update_tiling_data.h"

using namespace AscendC;

namespace {

constexpr int32_t BUFFER_NUM = 2;
constexpr int64_t STAT_LANES = 8;       // fp32 lanes of one statistics row = one 32-byte block
constexpr int64_t BLOCK_BYTES = 32;
constexpr int64_t STAT_TENSORS_IN = 4;  // prev max, prev sum, cur max, cur sum
constexpr int64_t STAT_TENSORS_OUT = 2; // max, sum
constexpr int64_t LAYOUT_SBH = 0;
constexpr int64_t LAYOUT_TND_TND = 1;
constexpr int64_t LAYOUT_TND_NTD = 2;

template <typename T>
class RingAttentionUpdateKernel {
public:
    __aicore__ inline RingAttentionUpdateKernel() {}

    __aicore__ inline void Init(GM_ADDR prevAttnOut, GM_ADDR prevSoftmaxMax, GM_ADDR prevSoftmaxSum, GM_ADDR curAttnOut,
                                GM_ADDR curSoftmaxMax, GM_ADDR curSoftmaxSum, GM_ADDR actualSeqQlen, GM_ADDR attnOut,
                                GM_ADDR softmaxMax, GM_ADDR softmaxSum, const RingAttentionUpdateTilingData* tiling,
                                TPipe* pipe)
    {
        layout_ = tiling->layoutMode;
        batch_ = tiling->batch;
        seqLen_ = tiling->seqLen;
        headNum_ = tiling->headNum;
        headDim_ = tiling->headDim;
        totalRows_ = tiling->totalRows;
        rowsPerLoop_ = tiling->rowsPerLoop;
        colsPerLoop_ = tiling->colsPerLoop;
        colLoops_ = tiling->colLoops;
        colTail_ = tiling->colTail;

        const int64_t core = GetBlockIdx();
        const int64_t base = tiling->coreRowsBase;
        const int64_t rem = tiling->coreRowsRemainder;
        rowStart_ = core * base + (core < rem ? core : rem);
        rowCount_ = base + (core < rem ? 1 : 0);

        const uint64_t attnElems = static_cast<uint64_t>(totalRows_ * headDim_);
        const uint64_t statElems = static_cast<uint64_t>(totalRows_ * STAT_LANES);
        prevAttnGm_.SetGlobalBuffer((__gm__ T*)prevAttnOut, attnElems);
        curAttnGm_.SetGlobalBuffer((__gm__ T*)curAttnOut, attnElems);
        attnOutGm_.SetGlobalBuffer((__gm__ T*)attnOut, attnElems);
        prevMaxGm_.SetGlobalBuffer((__gm__ float*)prevSoftmaxMax, statElems);
        prevSumGm_.SetGlobalBuffer((__gm__ float*)prevSoftmaxSum, statElems);
        curMaxGm_.SetGlobalBuffer((__gm__ float*)curSoftmaxMax, statElems);
        curSumGm_.SetGlobalBuffer((__gm__ float*)curSoftmaxSum, statElems);
        maxOutGm_.SetGlobalBuffer((__gm__ float*)softmaxMax, statElems);
        sumOutGm_.SetGlobalBuffer((__gm__ float*)softmaxSum, statElems);
        if (layout_ == LAYOUT_TND_NTD) {
            seqQlenGm_.SetGlobalBuffer((__gm__ int64_t*)actualSeqQlen, static_cast<uint64_t>(batch_ + 1));
            seqIdx_ = 0;
            seqBegin_ = seqQlenGm_.GetValue(0);
            seqEnd_ = seqQlenGm_.GetValue(1);
        }

        statElems_ = rowsPerLoop_ * STAT_LANES;
        tileElems_ = rowsPerLoop_ * tiling->colsPerLoopAlign;
        const uint32_t statBytes = static_cast<uint32_t>(statElems_ * sizeof(float));
        pipe->InitBuffer(statsInQue_, BUFFER_NUM, statBytes * STAT_TENSORS_IN);
        pipe->InitBuffer(statsOutQue_, BUFFER_NUM, statBytes * STAT_TENSORS_OUT);
        pipe->InitBuffer(weightBuf_, statBytes * 2);
        pipe->InitBuffer(attnInQue_, BUFFER_NUM, static_cast<uint32_t>(tileElems_ * 2 * sizeof(T)));
        pipe->InitBuffer(attnOutQue_, BUFFER_NUM, static_cast<uint32_t>(tileElems_ * sizeof(T)));
        if constexpr (!std::is_same<T, float>::value) {
            pipe->InitBuffer(castBuf_, static_cast<uint32_t>(tileElems_ * 2 * sizeof(float)));
        }
    }

    __aicore__ inline void Process()
    {
        int64_t row = rowStart_;
        const int64_t end = rowStart_ + rowCount_;
        while (row < end) {
            int64_t attnOffset = 0;
            int64_t attnStride = 0;
            int64_t runEnd = 0;
            if (!LocateRun(row, attnOffset, attnStride, runEnd)) {
                break;  // inconsistent actual_seq_qlen: stop instead of reading out of range
            }
            int64_t rows = end - row;
            rows = rows < rowsPerLoop_ ? rows : rowsPerLoop_;
            rows = rows < runEnd - row ? rows : runEnd - row;

            CopyInStats(row, rows);
            ComputeStats(rows);
            CopyOutStats(row, rows);
            for (int64_t c = 0; c < colLoops_; ++c) {
                const int64_t cols = (c == colLoops_ - 1) ? colTail_ : colsPerLoop_;
                const int64_t offset = attnOffset + c * colsPerLoop_;
                CopyIn(offset, attnStride, rows, cols);
                Compute(rows, cols);
                CopyOut(offset, attnStride, rows, cols);
            }
            row += rows;
        }
    }

private:
    // First attention element of statistics row `row`, the GM stride between consecutive attention
    // rows, and the end of the run of rows sharing that stride.
    __aicore__ inline bool LocateRun(int64_t row, int64_t& attnOffset, int64_t& attnStride, int64_t& runEnd)
    {
        if (layout_ == LAYOUT_SBH) {
            // stats row (b, n, s) = (b * N + n) * S + s; attn element (s, b, n, e) of [S, B, N * D]
            const int64_t bn = row / seqLen_;
            const int64_t s = row - bn * seqLen_;
            attnOffset = (s * batch_ * headNum_ + bn) * headDim_;
            attnStride = batch_ * headNum_ * headDim_;
            runEnd = (bn + 1) * seqLen_;
            return true;
        }
        if (layout_ == LAYOUT_TND_TND) {
            // stats row (t, n) = t * N + n, same order as the attention rows
            attnOffset = row * headDim_;
            attnStride = headDim_;
            runEnd = totalRows_;
            return true;
        }
        // NTD: sequence b owns stats rows [q_b * N, q_{b+1} * N) laid out [N, S_b]; rows are
        // visited in increasing order, so the sequence cursor only moves forward.
        while (row >= seqEnd_ * headNum_) {
            if (seqIdx_ + 1 >= batch_) {
                return false;
            }
            ++seqIdx_;
            seqBegin_ = seqEnd_;
            seqEnd_ = seqQlenGm_.GetValue(seqIdx_ + 1);
        }
        const int64_t len = seqEnd_ - seqBegin_;
        const int64_t local = row - seqBegin_ * headNum_;
        if (len <= 0 || local < 0) {
            return false;
        }
        const int64_t n = local / len;
        const int64_t r = local - n * len;
        attnOffset = ((seqBegin_ + r) * headNum_ + n) * headDim_;
        attnStride = headNum_ * headDim_;
        runEnd = seqBegin_ * headNum_ + (n + 1) * len;
        return true;
    }

    __aicore__ inline void CopyInStats(int64_t row, int64_t rows)
    {
        LocalTensor<float> in = statsInQue_.AllocTensor<float>();
        const uint32_t count = static_cast<uint32_t>(rows * STAT_LANES);  // rows * 32 bytes: aligned
        const int64_t gm = row * STAT_LANES;
        DataCopy(in, prevMaxGm_[gm], count);
        DataCopy(in[statElems_], prevSumGm_[gm], count);
        DataCopy(in[2 * statElems_], curMaxGm_[gm], count);
        DataCopy(in[3 * statElems_], curSumGm_[gm], count);
        statsInQue_.EnQue(in);
    }

    __aicore__ inline void ComputeStats(int64_t rows)
    {
        LocalTensor<float> in = statsInQue_.DeQue<float>();
        LocalTensor<float> out = statsOutQue_.AllocTensor<float>();
        LocalTensor<float> prevMax = in;
        LocalTensor<float> prevSum = in[statElems_];
        LocalTensor<float> curMax = in[2 * statElems_];
        LocalTensor<float> curSum = in[3 * statElems_];
        LocalTensor<float> newMax = out;
        LocalTensor<float> newSum = out[statElems_];
        LocalTensor<float> wPrev = weightBuf_.Get<float>();
        LocalTensor<float> wCur = wPrev[statElems_];
        const int32_t count = static_cast<int32_t>(rows * STAT_LANES);

        Max(newMax, prevMax, curMax, count);
        PipeBarrier<PIPE_V>();
        Sub(wPrev, prevMax, newMax, count);
        Sub(wCur, curMax, newMax, count);
        PipeBarrier<PIPE_V>();
        Exp(wPrev, wPrev, count);
        Exp(wCur, wCur, count);
        PipeBarrier<PIPE_V>();
        Mul(wPrev, prevSum, wPrev, count);  // sp = prev_sum * exp(prev_max - m)
        Mul(wCur, curSum, wCur, count);     // sc
        PipeBarrier<PIPE_V>();
        Add(newSum, wPrev, wCur, count);    // s = sp + sc
        PipeBarrier<PIPE_V>();
        Div(wPrev, wPrev, newSum, count);   // weights: sp / s, sc / s (true divisions)
        Div(wCur, wCur, newSum, count);
        statsInQue_.FreeTensor(in);
        statsOutQue_.EnQue(out);
        // the attention pass reads lane 0 of the weights with the scalar unit
        event_t vToS = static_cast<event_t>(GetTPipePtr()->FetchEventID(HardEvent::V_S));
        SetFlag<HardEvent::V_S>(vToS);
        WaitFlag<HardEvent::V_S>(vToS);
    }

    __aicore__ inline void CopyOutStats(int64_t row, int64_t rows)
    {
        LocalTensor<float> out = statsOutQue_.DeQue<float>();
        const uint32_t count = static_cast<uint32_t>(rows * STAT_LANES);
        const int64_t gm = row * STAT_LANES;
        DataCopy(maxOutGm_[gm], out, count);
        DataCopy(sumOutGm_[gm], out[statElems_], count);
        statsOutQue_.FreeTensor(out);
    }

    __aicore__ inline void CopyIn(int64_t offset, int64_t stride, int64_t rows, int64_t cols)
    {
        LocalTensor<T> in = attnInQue_.AllocTensor<T>();
        // rows blocks of cols elements, GM gap (stride - cols) elements; each block lands 32-byte
        // aligned in UB, i.e. at a row pitch of AlignUp(cols, 32 / sizeof(T)) elements.
        DataCopyExtParams params{static_cast<uint16_t>(rows), static_cast<uint32_t>(cols * sizeof(T)),
                                 static_cast<uint32_t>((stride - cols) * sizeof(T)), 0, 0};
        DataCopyPadExtParams<T> pad{false, 0, 0, 0};
        DataCopyPad(in, prevAttnGm_[offset], params, pad);
        DataCopyPad(in[tileElems_], curAttnGm_[offset], params, pad);
        attnInQue_.EnQue(in);
    }

    // dst[r, :cols] *= lane 0 of the row's weight
    __aicore__ inline void ScaleRows(const LocalTensor<float>& prev, const LocalTensor<float>& cur, int64_t rows,
                                     int64_t cols, int64_t pitch)
    {
        LocalTensor<float> wPrev = weightBuf_.Get<float>();
        LocalTensor<float> wCur = wPrev[statElems_];
        for (int64_t r = 0; r < rows; ++r) {
            const float wp = wPrev.GetValue(r * STAT_LANES);
            const float wc = wCur.GetValue(r * STAT_LANES);
            Muls(prev[r * pitch], prev[r * pitch], wp, static_cast<int32_t>(cols));
            Muls(cur[r * pitch], cur[r * pitch], wc, static_cast<int32_t>(cols));
        }
    }

    __aicore__ inline void Compute(int64_t rows, int64_t cols)
    {
        constexpr int64_t blockElems = BLOCK_BYTES / sizeof(T);
        const int64_t pitch = (cols + blockElems - 1) / blockElems * blockElems;
        const int32_t count = static_cast<int32_t>(rows * pitch);
        LocalTensor<T> in = attnInQue_.DeQue<T>();
        LocalTensor<T> out = attnOutQue_.AllocTensor<T>();
        if constexpr (std::is_same<T, float>::value) {
            LocalTensor<float> prev = in;
            LocalTensor<float> cur = in[tileElems_];
            ScaleRows(prev, cur, rows, cols, pitch);
            PipeBarrier<PIPE_V>();
            Add(out, prev, cur, count);
            attnInQue_.FreeTensor(in);
        } else {
            LocalTensor<float> prev = castBuf_.Get<float>();
            LocalTensor<float> cur = prev[tileElems_];
            Cast(prev, in, RoundMode::CAST_NONE, count);  // exact widening
            Cast(cur, in[tileElems_], RoundMode::CAST_NONE, count);
            PipeBarrier<PIPE_V>();
            attnInQue_.FreeTensor(in);
            ScaleRows(prev, cur, rows, cols, pitch);
            PipeBarrier<PIPE_V>();
            Add(prev, prev, cur, count);
            PipeBarrier<PIPE_V>();
            Cast(out, prev, RoundMode::CAST_RINT, count);  // round to nearest even
        }
        attnOutQue_.EnQue(out);
    }

    __aicore__ inline void CopyOut(int64_t offset, int64_t stride, int64_t rows, int64_t cols)
    {
        LocalTensor<T> out = attnOutQue_.DeQue<T>();
        DataCopyExtParams params{static_cast<uint16_t>(rows), static_cast<uint32_t>(cols * sizeof(T)), 0,
                                 static_cast<uint32_t>((stride - cols) * sizeof(T)), 0};
        DataCopyPad(attnOutGm_[offset], out, params);
        attnOutQue_.FreeTensor(out);
    }

    TQue<TPosition::VECIN, BUFFER_NUM> statsInQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> statsOutQue_;
    TQue<TPosition::VECIN, BUFFER_NUM> attnInQue_;
    TQue<TPosition::VECOUT, BUFFER_NUM> attnOutQue_;
    TBuf<TPosition::VECCALC> weightBuf_;
    TBuf<TPosition::VECCALC> castBuf_;

    GlobalTensor<T> prevAttnGm_;
    GlobalTensor<T> curAttnGm_;
    GlobalTensor<T> attnOutGm_;
    GlobalTensor<float> prevMaxGm_;
    GlobalTensor<float> prevSumGm_;
    GlobalTensor<float> curMaxGm_;
    GlobalTensor<float> curSumGm_;
    GlobalTensor<float> maxOutGm_;
    GlobalTensor<float> sumOutGm_;
    GlobalTensor<int64_t> seqQlenGm_;

    int64_t layout_ = 0;
    int64_t batch_ = 0;
    int64_t seqLen_ = 0;
    int64_t headNum_ = 0;
    int64_t headDim_ = 0;
    int64_t totalRows_ = 0;
    int64_t rowsPerLoop_ = 0;
    int64_t colsPerLoop_ = 0;
    int64_t colLoops_ = 0;
    int64_t colTail_ = 0;
    int64_t rowStart_ = 0;
    int64_t rowCount_ = 0;
    int64_t statElems_ = 0;
    int64_t tileElems_ = 0;
    int64_t seqIdx_ = 0;
    int64_t seqBegin_ = 0;
    int64_t seqEnd_ = 0;
};

}  // namespace

extern "C" __global__ __aicore__ void ascend_attn_ring_attention_update(GM_ADDR prevAttnOut, GM_ADDR prevSoftmaxMax,
                                                            GM_ADDR prevSoftmaxSum, GM_ADDR curAttnOut,
                                                            GM_ADDR curSoftmaxMax, GM_ADDR curSoftmaxSum,
                                                            GM_ADDR actualSeqQlen, GM_ADDR attnOut, GM_ADDR softmaxMax,
                                                            GM_ADDR softmaxSum, GM_ADDR workspace, GM_ADDR tiling)
{
    KERNEL_TASK_TYPE_DEFAULT(KERNEL_TYPE_AIV_ONLY);
    REGISTER_TILING_DEFAULT(RingAttentionUpdateTilingData);
    GET_TILING_DATA_WITH_STRUCT(RingAttentionUpdateTilingData, tilingData, tiling);
    (void)workspace;
    TPipe pipe;
    if (TILING_KEY_IS(0)) {
        RingAttentionUpdateKernel<half> op;
        op.Init(prevAttnOut, prevSoftmaxMax, prevSoftmaxSum, curAttnOut, curSoftmaxMax, curSoftmaxSum, actualSeqQlen,
                attnOut, softmaxMax, softmaxSum, &tilingData, &pipe);
        op.Process();
    } else if (TILING_KEY_IS(1)) {
        RingAttentionUpdateKernel<bfloat16_t> op;
        op.Init(prevAttnOut, prevSoftmaxMax, prevSoftmaxSum, curAttnOut, curSoftmaxMax, curSoftmaxSum, actualSeqQlen,
                attnOut, softmaxMax, softmaxSum, &tilingData, &pipe);
        op.Process();
    } else if (TILING_KEY_IS(2)) {
        RingAttentionUpdateKernel<float> op;
        op.Init(prevAttnOut, prevSoftmaxMax, prevSoftmaxSum, curAttnOut, curSoftmaxMax, curSoftmaxSum, actualSeqQlen,
                attnOut, softmaxMax, softmaxSum, &tilingData, &pipe);
        op.Process();
    }
}
