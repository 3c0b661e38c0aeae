/*
 * Host-simulation runner of RingAttentionUpdate (C ABI, host-sim build only).
 *
 * Computes the tiling with the same pure function the CANN TilingFunc calls, registers the GM
 * buffers (inputs read-only; outputs must be written exactly once), then runs the kernel entry
 * ring_attention_update (op_kernel/ring_attention_update.cpp, compiled unchanged against the
 * emulated AscendC) once per block index. Returns 0 or an AscendC::sim::Status code; the message
 * buffer receives the error text.
 */
#include <cstdint>
#include <cstring>
#include <string>

#include "ascend_attn_sim/runtime.h"
#include "kernel_operator.h"
#include "ring_attention_update_tiling.h"

extern "C" __global__ __aicore__ void ascend_attn_ring_attention_update(GM_ADDR prevAttnOut, GM_ADDR prevSoftmaxMax,
                                                            GM_ADDR prevSoftmaxSum, GM_ADDR curAttnOut,
                                                            GM_ADDR curSoftmaxMax, GM_ADDR curSoftmaxSum,
                                                            GM_ADDR actualSeqQlen, GM_ADDR attnOut, GM_ADDR softmaxMax,
                                                            GM_ADDR softmaxSum, GM_ADDR workspace, GM_ADDR tiling);

namespace {

namespace sim = AscendC::sim;
using ascend_attn::rau::RingAttentionUpdateShapeInfo;

constexpr const char* kTilingFields =
    "layoutMode,attnDtype,batch,seqLen,headNum,headDim,totalRows,usedCoreNum,coreRowsBase,coreRowsRemainder,"
    "rowsPerLoop,colsPerLoop,colsPerLoopAlign,colLoops,colTail,ubBytes";
static_assert(sizeof(RingAttentionUpdateTilingData) == 16 * sizeof(int64_t), "update kTilingFields with the struct");

int64_t Elements(const int64_t* shape, int64_t n)
{
    int64_t e = 1;
    for (int64_t i = 0; i < n; ++i) {
        e *= shape[i];
    }
    return e;
}

bool FillShape(RingAttentionUpdateShapeInfo& info, int64_t dtype, const int64_t* attnShape, int64_t attnNdim,
               const int64_t* statsShape, int64_t statsNdim, const char* layout, const char* smLayout, int64_t seqNum,
               int64_t coreNum, int64_t ubSize, std::string& msg)
{
    if (attnShape == nullptr || statsShape == nullptr || attnNdim < 0 || attnNdim > 3 || statsNdim < 0 || statsNdim > 4) {
        msg = "runner: attn_shape/stats_shape missing or of rank > 3/4";
        return false;
    }
    info.attnDtype = dtype;
    info.attnDimNum = attnNdim;
    info.statsDimNum = statsNdim;
    for (int64_t i = 0; i < attnNdim; ++i) {
        info.attnShape[i] = attnShape[i];
    }
    for (int64_t i = 0; i < statsNdim; ++i) {
        info.statsShape[i] = statsShape[i];
    }
    info.inputLayout = layout ? layout : "SBH";
    info.softmaxLayout = smLayout ? smLayout : "";
    info.actualSeqQlenNum = seqNum;
    info.coreNum = coreNum;
    info.ubSize = ubSize;
    return true;
}

void CopyTiling(const RingAttentionUpdateTilingData& td, int64_t* out, int64_t len)
{
    if (out == nullptr || len <= 0) {
        return;
    }
    int64_t fields[16];
    std::memcpy(fields, &td, sizeof(fields));
    for (int64_t i = 0; i < len && i < 16; ++i) {
        out[i] = fields[i];
    }
}

}  // namespace

extern "C" {

// Comma-separated names of the int64 fields of RingAttentionUpdateTilingData, in order.
int ascend_attn_sim_ring_attention_update_tiling_fields(char* buf, int64_t len)
{
    sim::CopyMessage(kTilingFields, buf, len);
    return 0;
}

// Tiling only (no kernel run). Returns 0 or sim::kTilingError.
int ascend_attn_sim_ring_attention_update_tiling(int64_t attn_dtype, const int64_t* attn_shape, int64_t attn_ndim,
                                                 const int64_t* stats_shape, int64_t stats_ndim, const char* input_layout,
                                                 const char* input_softmax_layout, int64_t actual_seq_qlen_num,
                                                 int64_t core_num, int64_t ub_size, int64_t* tiling_out,
                                                 int64_t tiling_out_len, char* msg, int64_t msg_len)
{
    return sim::GuardedCall(
        [&](std::string& m) {
            RingAttentionUpdateShapeInfo info;
            if (!FillShape(info, attn_dtype, attn_shape, attn_ndim, stats_shape, stats_ndim, input_layout,
                           input_softmax_layout, actual_seq_qlen_num, core_num, ub_size, m)) {
                return static_cast<int>(sim::kInvalidArgument);
            }
            RingAttentionUpdateTilingData td;
            if (!ascend_attn::rau::ComputeRingAttentionUpdateTiling(info, td, m)) {
                return static_cast<int>(sim::kTilingError);
            }
            CopyTiling(td, tiling_out, tiling_out_len);
            return static_cast<int>(sim::kOk);
        },
        msg, msg_len);
}

// Full run. attn tensors in attn_dtype (0 float16, 1 bfloat16, 2 float32), statistics float32,
// actual_seq_qlen int64 (actual_seq_qlen_num = -1 when absent). core_num / ub_size describe the
// emulated device; tiling_ub_size (0 = ub_size) is the UB size the tiling is told about, so a
// tiling planned for a bigger UB than the device has must fail with UB_OVERFLOW in the kernel.
// threaded != 0 runs one thread per block. tiling_out (optional) receives the tiling fields,
// peak_ub_out (optional) the largest UB allocation of any block.
int ascend_attn_sim_ring_attention_update(const void* prev_attn_out, const void* prev_softmax_max,
                                          const void* prev_softmax_sum, const void* cur_attn_out,
                                          const void* cur_softmax_max, const void* cur_softmax_sum,
                                          const int64_t* actual_seq_qlen, int64_t actual_seq_qlen_num, void* attn_out,
                                          void* softmax_max, void* softmax_sum, int64_t attn_dtype,
                                          const int64_t* attn_shape, int64_t attn_ndim, const int64_t* stats_shape,
                                          int64_t stats_ndim, const char* input_layout, const char* input_softmax_layout,
                                          int64_t core_num, int64_t ub_size, int64_t tiling_ub_size, int64_t threaded,
                                          int64_t* tiling_out, int64_t tiling_out_len, int64_t* peak_ub_out, char* msg,
                                          int64_t msg_len)
{
    return sim::GuardedCall(
        [&](std::string& m) {
            RingAttentionUpdateShapeInfo info;
            if (!FillShape(info, attn_dtype, attn_shape, attn_ndim, stats_shape, stats_ndim, input_layout,
                           input_softmax_layout, actual_seq_qlen_num, core_num,
                           tiling_ub_size > 0 ? tiling_ub_size : ub_size, m)) {
                return static_cast<int>(sim::kInvalidArgument);
            }
            RingAttentionUpdateTilingData td;
            if (!ascend_attn::rau::ComputeRingAttentionUpdateTiling(info, td, m)) {
                return static_cast<int>(sim::kTilingError);
            }
            CopyTiling(td, tiling_out, tiling_out_len);
            if (ub_size <= 0) {
                m = "runner: ub_size must be positive";
                return static_cast<int>(sim::kInvalidArgument);
            }

            const uint64_t attnBytes = static_cast<uint64_t>(Elements(attn_shape, attn_ndim)) *
                                       static_cast<uint64_t>(ascend_attn::rau::RingAttentionUpdateDtypeSize(attn_dtype));
            const uint64_t statBytes = static_cast<uint64_t>(Elements(stats_shape, stats_ndim)) * sizeof(float);
            sim::Config cfg;
            cfg.capacity[sim::kUB] = static_cast<uint64_t>(ub_size);
            cfg.threaded = threaded != 0;
            sim::Launch launch(cfg);
            launch.Input("prev_attn_out", prev_attn_out, attnBytes);
            launch.Input("prev_softmax_max", prev_softmax_max, statBytes);
            launch.Input("prev_softmax_sum", prev_softmax_sum, statBytes);
            launch.Input("cur_attn_out", cur_attn_out, attnBytes);
            launch.Input("cur_softmax_max", cur_softmax_max, statBytes);
            launch.Input("cur_softmax_sum", cur_softmax_sum, statBytes);
            if (actual_seq_qlen != nullptr && actual_seq_qlen_num > 0) {
                launch.Input("actual_seq_qlen", actual_seq_qlen, static_cast<uint64_t>(actual_seq_qlen_num) * sizeof(int64_t));
            }
            launch.Output("attn_out", attn_out, attnBytes);
            launch.Output("softmax_max", softmax_max, statBytes);
            launch.Output("softmax_sum", softmax_sum, statBytes);
            launch.Input("tiling", &td, sizeof(td));

            auto gm = [](const void* p) { return reinterpret_cast<GM_ADDR>(const_cast<void*>(p)); };
            sim::RunReport report;
            const int rc = launch.Run(
                td.usedCoreNum, static_cast<uint64_t>(td.attnDtype),
                [&] {
                    ascend_attn_ring_attention_update(gm(prev_attn_out), gm(prev_softmax_max), gm(prev_softmax_sum), gm(cur_attn_out),
                                          gm(cur_softmax_max), gm(cur_softmax_sum), gm(actual_seq_qlen), gm(attn_out),
                                          gm(softmax_max), gm(softmax_sum), nullptr, gm(&td));
                },
                &m, &report);
            if (peak_ub_out != nullptr) {
                *peak_ub_out = static_cast<int64_t>(report.peak[sim::kUB]);
            }
            if (rc != sim::kOk) {
                m = "RingAttentionUpdate host sim: " + std::string(sim::StatusName(rc)) + ": " + m;
            }
            return rc;
        },
        msg, msg_len);
}

}  // extern "C"
