/*
 * Host-simulation runner of FlashAttentionUnpaddingScoreGradV4 (C ABI for ctypes).
 *
 * Runs the same pure tiling as the CANN TilingFunc (fag_v4::ComputeFagV4Tiling), then the kernel
 * entry once per block in threaded mode (the kernel uses SyncAll between its zero / main / cast
 * phases) with the UB capacity `simUb`. Passing a tiling UB size larger than the simulated one
 * (or a forced vecRows) produces a tiling that does not fit: the launch then fails with
 * UB_OVERFLOW, as the device would.
 *
 * sparseMode / preTokens / nextTokens / hasMask: the attributes (a compressed mask is not passed:
 * the kernel applies its index rule; a full mask of sparse_mode 0 / 1 is, as mask / feat[kMaskForm..]).
 * prefix: int64 [batch] for sparse_mode 6, else null.
 * mask, pse, dropMask: the optional inputs (null when absent), described by feat[] (kFeat* below) and
 * keepProb; feat[kDeterministic] selects the deterministic (kv-major, non-atomic) dk / dv pass.
 * dtype: 0 float16, 1 bfloat16, 2 float32 (q, k, v, dy, attention_in, dq, dk, dv);
 * softmax_max / softmax_sum fp32 [t1, n1, 8]; cumQ / cumKv int64 [batch] (no leading 0).
 * info (out, 14 int64): status-independent plan: blockDim, s1Block, s2Block, s2Stride, vecRows,
 * totalUnits, ubPlannedBytes, ubPeakBytes, postRows, tilingKey, workspaceBytes, maskKind, pseForm,
 * totalKvUnits (deterministic pass).
 * Returns an AscendC::sim::Status code; msg receives the reason.
 */
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "ascend_attn_sim/runtime.h"
#include "flash_attention_unpadding_score_grad_v4_tiling.h"

extern "C" void ascend_attn_flash_attention_unpadding_score_grad_v4(
    GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR dy, GM_ADDR pseShift, GM_ADDR dropMask, GM_ADDR paddingMask,
    GM_ADDR attenMask, GM_ADDR softmaxMax, GM_ADDR softmaxSum, GM_ADDR softmaxIn, GM_ADDR attentionIn, GM_ADDR prefix,
    GM_ADDR actualSeqQlen, GM_ADDR actualSeqKvlen, GM_ADDR qStartIdx, GM_ADDR kvStartIdx, GM_ADDR dq, GM_ADDR dk,
    GM_ADDR dv, GM_ADDR dpse, GM_ADDR workspace, GM_ADDR tiling);

namespace {
using namespace AscendC::sim;

// feat[] of the C ABI: the optional inputs and options of the feature branches.
enum Feature {
    kMaskForm = 0,      // 0: none or compressed (not passed), 1: local [maxS1, maxS2], 2: global [T1, T2]
    kMaskCols = 1,      // columns of the full mask
    kMaskBytes = 2,     // bytes of the mask buffer
    kPseForm = 3,       // fag_v4::PseForm (0 = no pse)
    kPseType = 4,
    kPseBatch = 5,      // alibi / slopes: B or 1
    kPseSRef = 6,       // alibi: last dim
    kPseBytes = 7,
    kQStart = 8,
    kKvStart = 9,
    kDropBytes = 10,    // 0 = no drop_mask
    kDeterministic = 11,
    kFeatureCount = 12,
};

int RunFag(const void* q, const void* k, const void* v, const void* dy, const float* smax, const float* ssum,
           const void* attnIn, const int64_t* cumQ, const int64_t* cumKv, const int64_t* prefix, int64_t batch,
           const void* mask, const void* pse, const void* dropMask, const int64_t* feat, double keepProb,
           void* dq, void* dk, void* dv,
           int64_t t1, int64_t t2, int64_t n1, int64_t n2, int64_t d, int64_t dtype, double scale, int64_t sparseMode,
           int64_t preTokens, int64_t nextTokens, int64_t hasMask, int64_t softmaxTnd, int64_t coreNum,
           int64_t tilingUb, int64_t simUb, int64_t s1Hint, int64_t s2Hint, int64_t vecRowsHint, int64_t* info,
           std::string& msg)
{
    if (dtype < 0 || dtype > 2 || batch <= 0 || t1 < 0 || t2 < 0 || n1 <= 0 || n2 <= 0 || d <= 0) {
        msg = "runner: invalid arguments";
        return kInvalidArgument;
    }
    fag_v4::FagV4TilingInput in;
    in.t1 = t1;
    in.t2 = t2;
    in.n1 = n1;
    in.n2 = n2;
    in.d = d;
    in.dtypeBytes = dtype == 2 ? 4 : 2;
    in.bf16 = dtype == 1;
    in.cumQ = cumQ;
    in.cumKv = cumKv;
    in.batch = static_cast<uint32_t>(batch);
    in.sparseMode = sparseMode;
    in.preTokens = preTokens;
    in.nextTokens = nextTokens;
    in.prefix = prefix;
    in.hasAttenMask = hasMask != 0;
    in.maskForm = static_cast<uint32_t>(feat[kMaskForm]);
    in.maskCols = feat[kMaskCols];
    in.hasPse = feat[kPseForm] != 0;
    in.pseForm = static_cast<uint32_t>(feat[kPseForm]);
    in.pseType = feat[kPseType];
    in.pseBatch = feat[kPseBatch];
    in.pseSRef = feat[kPseSRef];
    in.qStartIdx = feat[kQStart];
    in.kvStartIdx = feat[kKvStart];
    in.hasDropMask = feat[kDropBytes] != 0;
    in.keepProb = static_cast<float>(keepProb);
    in.deterministic = feat[kDeterministic] != 0;
    if ((in.maskForm != 0) != (mask != nullptr) || in.hasPse != (pse != nullptr) ||
        in.hasDropMask != (dropMask != nullptr)) {
        msg = "runner: optional inputs and feat[] disagree";
        return kInvalidArgument;
    }
    in.softmaxTnd = softmaxTnd != 0;
    in.scale = static_cast<float>(scale);
    in.coreNum = static_cast<uint32_t>(coreNum);
    in.ubSize = static_cast<uint64_t>(tilingUb);
    in.s1BlockHint = static_cast<uint32_t>(s1Hint);
    in.s2BlockHint = static_cast<uint32_t>(s2Hint);
    in.vecRowsHint = static_cast<uint32_t>(vecRowsHint);
    fag_v4::FagV4TilingData tiling;
    const fag_v4::FagV4TilingResult r = fag_v4::ComputeFagV4Tiling(in, tiling);
    if (r.status != 0) {
        msg = std::string("tiling: ") + r.message;
        return kTilingError;
    }
    if (info != nullptr) {
        info[0] = r.blockDim;
        info[1] = tiling.s1Block;
        info[2] = tiling.s2Block;
        info[3] = tiling.s2Stride;
        info[4] = tiling.vecRows;
        info[5] = static_cast<int64_t>(tiling.totalUnits);
        info[6] = static_cast<int64_t>(tiling.ubPlannedBytes);
        info[7] = 0;
        info[8] = tiling.postRows;
        info[9] = static_cast<int64_t>(r.tilingKey);
        info[10] = static_cast<int64_t>(r.workspaceUser);
        info[11] = tiling.maskKind;
        info[12] = tiling.pseForm;
        info[13] = static_cast<int64_t>(tiling.totalKvUnits);
    }
    const uint64_t sz = in.dtypeBytes;
    const uint64_t qBytes = static_cast<uint64_t>(t1) * n1 * d * sz;
    const uint64_t kBytes = static_cast<uint64_t>(t2) * n2 * d * sz;
    const uint64_t statBytes = static_cast<uint64_t>(t1) * n1 * 8 * sizeof(float);
    std::vector<uint8_t> workspace(r.workspaceUser + 64);
    uint8_t* ws = workspace.data() + (64 - reinterpret_cast<uintptr_t>(workspace.data()) % 64) % 64;

    Config cfg;
    cfg.capacity[kUB] = static_cast<uint64_t>(simUb);
    cfg.threaded = true;  // SyncAll between the phases
    Launch launch(cfg);
    launch.Input("query", q, qBytes);
    launch.Input("key", k, kBytes);
    launch.Input("value", v, kBytes);
    launch.Input("dy", dy, qBytes);
    launch.Input("softmax_max", smax, statBytes);
    launch.Input("softmax_sum", ssum, statBytes);
    launch.Input("attention_in", attnIn, qBytes);
    launch.Input("actual_seq_qlen", cumQ, static_cast<uint64_t>(batch) * sizeof(int64_t));
    launch.Input("actual_seq_kvlen", cumKv, static_cast<uint64_t>(batch) * sizeof(int64_t));
    if (prefix != nullptr) {
        launch.Input("prefix", prefix, static_cast<uint64_t>(batch) * sizeof(int64_t));
    }
    if (mask != nullptr) {
        launch.Input("atten_mask", mask, static_cast<uint64_t>(feat[kMaskBytes]));
    }
    if (pse != nullptr) {
        launch.Input("pse", pse, static_cast<uint64_t>(feat[kPseBytes]));
    }
    if (dropMask != nullptr) {
        launch.Input("drop_mask", dropMask, static_cast<uint64_t>(feat[kDropBytes]));
    }
    launch.Input("tiling", &tiling, sizeof(tiling));
    launch.Output("dq", dq, qBytes);
    launch.Output("dk", dk, kBytes);
    launch.Output("dv", dv, kBytes);
    launch.Scratch("workspace", ws, r.workspaceUser);
    auto g = [](const void* p) { return reinterpret_cast<GM_ADDR>(const_cast<void*>(p)); };
    RunReport report;
    const int rc = launch.Run(
        r.blockDim, r.tilingKey,
        [&] {
            ascend_attn_flash_attention_unpadding_score_grad_v4(g(q), g(k), g(v), g(dy), g(pse), g(dropMask), nullptr, g(mask),
                                                    g(smax), g(ssum), nullptr, g(attnIn), g(prefix), g(cumQ), g(cumKv),
                                                    nullptr, nullptr, g(dq), g(dk), g(dv), nullptr, ws,
                                                    g(&tiling));
        },
        &msg, &report);
    if (info != nullptr) {
        info[7] = static_cast<int64_t>(report.peak[kUB]);
    }
    return rc;
}
}  // namespace

extern "C" int ascend_attn_sim_flash_attention_unpadding_score_grad_v4(
    const void* q, const void* k, const void* v, const void* dy, const float* smax, const float* ssum,
    const void* attnIn, const int64_t* cumQ, const int64_t* cumKv, const int64_t* prefix, int64_t batch,
    const void* mask, const void* pse, const void* dropMask, const int64_t* feat, double keepProb,
    void* dq, void* dk, void* dv,
    int64_t t1, int64_t t2, int64_t n1, int64_t n2, int64_t d, int64_t dtype, double scale, int64_t sparseMode,
    int64_t preTokens, int64_t nextTokens, int64_t hasMask, int64_t softmaxTnd, int64_t coreNum, int64_t tilingUb,
    int64_t simUb, int64_t s1Hint, int64_t s2Hint, int64_t vecRowsHint, int64_t* info, char* msg, int64_t msgLen)
{
    return GuardedCall(
        [&](std::string& m) {
            return RunFag(q, k, v, dy, smax, ssum, attnIn, cumQ, cumKv, prefix, batch, mask, pse, dropMask, feat,
                          keepProb, dq, dk, dv, t1, t2, n1, n2, d,
                          dtype, scale, sparseMode, preTokens, nextTokens, hasMask, softmaxTnd, coreNum, tilingUb,
                          simUb, s1Hint, s2Hint, vecRowsHint, info, m);
        },
        msg, msgLen);
}
