/*
 * Host-simulation runner of IncreFlashAttentionV2 (C ABI, loaded with ctypes by
 * tests/test_host_sim_ifa.py): runs the pure tiling function, then the kernel entry over
 * usedCoreNum simulated cores, against caller-owned buffers.
 *
 *   shape[5] = {batch, num_heads, num_key_value_heads, head_dim, seq_kv}   (seq_kv: the largest S_b of a list)
 *   opts[12] = {query/key/value dtype (0 fp16, 1 int8, 2 bf16), dequant scales are float32 (1) or uint64 words (0),
 *               quant_scale2 elements (0: absent, 1, Nq*D), quant_offset2 given (0/1),
 *               core count for the tiling, UB bytes told to the tiling, UB bytes of the simulated
 *               core (0: same), max KV block (0: default 512), layout (0 BSH, 1 BSND, 2 BNSD),
 *               K/V form (0 one tensor, 1 tensor list, 2 one tensor as a list of one: CANN's DYNAMIC form),
 *               max flash-decode split (0: default 16, 1: never), fewest positions per split (0: 512)}
 *   key / value: one tensor, or (tensor lists) arrays of `batch` addresses with listSeq[b] = S_b; the
 *   runner builds the list descriptors the kernel reads (ascend_attn_sim/list_tensor.h).
 *   atten_mask: bool/int8/uint8 bytes (nonzero = masked) of shape maskShape[maskDimNum] (or null)
 *   info[9]  (out) = {usedCoreNum, kvBlock, ubBytes, mode, workspaceSize, itemsPerCore, formerCoreNum, seqKvAlign,
 *                     splitNum}
 *
 * Returns an AscendC::sim::Status (0 OK, 1 tiling refused, 2 UB overflow, ...) and a message.
 */
#include <cstring>
#include <string>
#include <vector>

#include "kernel_operator.h"
#include "ascend_attn_sim/runtime.h"

#include "incre_flash_attention_v2_tiling.h"

extern "C" __global__ __aicore__ void ascend_attn_incre_flash_attention_v2(
    GM_ADDR query, GM_ADDR key, GM_ADDR value, GM_ADDR pseShift, GM_ADDR attenMask, GM_ADDR actualSeqLengths,
    GM_ADDR dequantScale1, GM_ADDR quantScale1, GM_ADDR dequantScale2, GM_ADDR quantScale2, GM_ADDR quantOffset2,
    GM_ADDR attentionOut, GM_ADDR workspace, GM_ADDR tiling);

namespace {

using namespace ascend_attn::ifa;
namespace sim = AscendC::sim;

// The tensor-list block of ListTensorDesc: offset word, per tensor "dims | index << 32" + dims, addresses.
std::vector<uint64_t> ListDescriptor(const void* const* ptrs, const std::vector<std::vector<uint64_t>>& shapes)
{
    std::vector<uint64_t> words{0};
    for (size_t i = 0; i < shapes.size(); ++i) {
        words.push_back(shapes[i].size() | (static_cast<uint64_t>(i) << 32));
        words.insert(words.end(), shapes[i].begin(), shapes[i].end());
    }
    words[0] = words.size() * sizeof(uint64_t);
    for (size_t i = 0; i < shapes.size(); ++i) {
        words.push_back(static_cast<uint64_t>(reinterpret_cast<uintptr_t>(ptrs[i])));
    }
    return words;
}

int Run(const void* query, const void* key, const void* value, const int64_t* listSeq, void* out,
        const int64_t* seqLens, int64_t seqLenCount,
        const void* deq1, const void* qs1, const void* deq2, const void* qs2, const void* qo2, const void* mask,
        const int64_t* maskShape, int64_t maskDimNum, const int64_t* shape, const int64_t* opts, float scaleValue,
        int64_t* info, std::string& msg)
{
    if (shape == nullptr || opts == nullptr || query == nullptr || key == nullptr || value == nullptr || out == nullptr) {
        msg = "ifa runner: null shape/opts/query/key/value/out";
        return sim::kInvalidArgument;
    }
    const bool int8In = opts[0] == 1;
    const bool bf16In = opts[0] == 2;
    const int64_t q2 = opts[2];
    IfaTilingInput in;
    in.batch = static_cast<uint32_t>(shape[0]);
    in.headsQ = static_cast<uint32_t>(shape[1]);
    in.headsKv = static_cast<uint32_t>(shape[2]);
    const uint32_t d = static_cast<uint32_t>(shape[3]);
    const uint32_t nkv = in.headsKv == 0 ? in.headsQ : in.headsKv;
    in.hidden = in.headsQ * d;
    in.hiddenKv = nkv * d;
    in.seqQ = 1;
    in.seqKv = static_cast<uint32_t>(shape[4]);
    in.keyBatch = in.batch;
    in.queryType = int8In ? kInt8 : (bf16In ? kBFloat16 : kFloat16);
    in.kvType = in.queryType;
    in.outType = q2 > 0 ? kInt8 : (bf16In ? kBFloat16 : kFloat16);
    static const char* const kLayouts[] = {"BSH", "BSND", "BNSD"};
    in.layout = opts[8] >= 0 && opts[8] <= 2 ? kLayouts[opts[8]] : "?";
    in.kvIsList = opts[9] == 1;
    in.kvAsDescriptor = opts[9] == 2;  // one tensor as a list of one (the CANN form of DYNAMIC inputs)
    if (opts[10] > 0) {
        in.maxSplit = static_cast<uint32_t>(opts[10]);
    }
    if (opts[11] > 0) {
        in.minSplitLen = static_cast<uint32_t>(opts[11]);
    }
    if (in.kvIsList && listSeq == nullptr) {
        msg = "ifa runner: tensor-list K/V need listSeq";
        return sim::kInvalidArgument;
    }
    in.scaleValue = scaleValue;
    in.seqLenCount = seqLens != nullptr ? static_cast<uint32_t>(seqLenCount) : 0;
    in.hasDequant1 = deq1 != nullptr;
    in.hasQuant1 = qs1 != nullptr;
    in.hasDequant2 = deq2 != nullptr;
    in.dequantType = opts[1] ? kFloat32 : kUint64;
    in.hasQuant2 = q2 > 0;
    in.quant2Elems = static_cast<uint32_t>(q2);
    in.hasQuantOffset2 = opts[3] != 0;
    in.quantOffset2Elems = in.hasQuantOffset2 ? static_cast<uint32_t>(q2) : 0;
    uint64_t maskBytes = 0;
    if (mask != nullptr) {
        if (maskShape == nullptr || maskDimNum < 2 || maskDimNum > 4) {
            msg = "ifa runner: atten_mask needs a shape of rank 2..4";
            return sim::kInvalidArgument;
        }
        in.hasMask = true;
        in.maskDimNum = static_cast<uint32_t>(maskDimNum);
        maskBytes = 1;
        for (int64_t i = 0; i < maskDimNum; ++i) {
            in.maskDims[i] = static_cast<uint64_t>(maskShape[i]);
            maskBytes *= static_cast<uint64_t>(maskShape[i]);
        }
    }
    in.coreNum = static_cast<uint32_t>(opts[4]);
    in.ubSize = static_cast<uint64_t>(opts[5]);
    if (opts[7] > 0) {
        in.maxKvBlock = static_cast<uint32_t>(opts[7]);
    }
    IncreFlashAttentionV2TilingData td;
    char err[512];
    if (IncreFlashAttentionV2Tiling(in, td, err, sizeof(err)) != kTilingOk) {
        msg = std::string("tiling: ") + err;
        return sim::kTilingError;
    }
    if (info != nullptr) {
        const int64_t vals[9] = {td.usedCoreNum, td.kvBlock, td.ubBytes, td.mode, static_cast<int64_t>(td.workspaceSize),
                                 td.itemsPerCore, td.formerCoreNum, td.seqKvAlign, td.splitNum};
        std::memcpy(info, vals, sizeof(vals));
    }
    const uint64_t qBytes = static_cast<uint64_t>(td.batch) * td.headsQ * td.headDim * (int8In ? 1 : 2);
    const uint64_t kvBytes = static_cast<uint64_t>(td.batch) * td.seqKv * td.headsKv * td.headDim * (int8In ? 1 : 2);
    const uint64_t outBytes = static_cast<uint64_t>(td.batch) * td.headsQ * td.headDim * (q2 > 0 ? 1 : 2);

    sim::Config cfg;
    cfg.capacity[sim::kUB] = opts[6] > 0 ? static_cast<uint64_t>(opts[6]) : in.ubSize;
    cfg.threaded = td.splitNum > 1;  // the flash-decode combine waits on SyncAll
    sim::Launch launch(cfg);
    launch.Input("query", query, qBytes);
    std::vector<uint64_t> keyDesc, valueDesc;
    if (in.kvIsList) {
        const uint64_t elem = int8In ? 1 : 2, nkvD = static_cast<uint64_t>(td.headsKv) * td.headDim;
        const auto* keys = static_cast<const void* const*>(key);
        const auto* values = static_cast<const void* const*>(value);
        std::vector<std::vector<uint64_t>> shapes;
        for (uint32_t b = 0; b < td.batch; ++b) {
            const uint64_t sb = static_cast<uint64_t>(listSeq[b]);
            shapes.push_back(opts[8] == 0 ? std::vector<uint64_t>{1, sb, nkvD}
                             : opts[8] == 1 ? std::vector<uint64_t>{1, sb, td.headsKv, td.headDim}
                                            : std::vector<uint64_t>{1, td.headsKv, sb, td.headDim});
            launch.Input(("key[" + std::to_string(b) + "]").c_str(), keys[b], sb * nkvD * elem);  // name copied
            launch.Input(("value[" + std::to_string(b) + "]").c_str(), values[b], sb * nkvD * elem);
        }
        keyDesc = ListDescriptor(keys, shapes);
        valueDesc = ListDescriptor(values, shapes);
        launch.Input("key (list descriptor)", keyDesc.data(), keyDesc.size() * 8);
        launch.Input("value (list descriptor)", valueDesc.data(), valueDesc.size() * 8);
        key = keyDesc.data();
        value = valueDesc.data();
    } else {
        launch.Input("key", key, kvBytes);
        launch.Input("value", value, kvBytes);
        if (in.kvAsDescriptor) {
            const std::vector<uint64_t> whole = opts[8] == 2
                ? std::vector<uint64_t>{td.batch, td.headsKv, td.seqKv, td.headDim}
                : (opts[8] == 1 ? std::vector<uint64_t>{td.batch, td.seqKv, td.headsKv, td.headDim}
                                : std::vector<uint64_t>{td.batch, td.seqKv, static_cast<uint64_t>(td.headsKv) * td.headDim});
            keyDesc = ListDescriptor(&key, {whole});
            valueDesc = ListDescriptor(&value, {whole});
            launch.Input("key (list descriptor)", keyDesc.data(), keyDesc.size() * 8);
            launch.Input("value (list descriptor)", valueDesc.data(), valueDesc.size() * 8);
            key = keyDesc.data();
            value = valueDesc.data();
        }
    }
    if (in.seqLenCount > 0) {
        launch.Input("actual_seq_lengths", seqLens, static_cast<uint64_t>(in.seqLenCount) * 8);
    }
    const uint64_t deqBytes = opts[1] ? 4 : 8;
    if (deq1) launch.Input("dequant_scale1", deq1, deqBytes);
    if (qs1) launch.Input("quant_scale1", qs1, 4);
    if (deq2) launch.Input("dequant_scale2", deq2, deqBytes);
    if (q2 > 0) {
        launch.Input("quant_scale2", qs2, static_cast<uint64_t>(q2) * 4);
        if (in.hasQuantOffset2) launch.Input("quant_offset2", qo2, static_cast<uint64_t>(q2) * 4);
    }
    if (mask != nullptr) {
        launch.Input("atten_mask", mask, maskBytes);
    }
    launch.Output("attention_out", out, outBytes);
    std::vector<uint8_t> workspace(td.workspaceSize + 64);
    launch.Scratch("workspace", workspace.data(), workspace.size());
    launch.Input("tiling", &td, sizeof(td));
    auto gm = [](const void* p) { return reinterpret_cast<GM_ADDR>(const_cast<void*>(p)); };
    return launch.Run(td.usedCoreNum, td.tilingKey, [&] {
        ascend_attn_incre_flash_attention_v2(gm(query), gm(key), gm(value), nullptr, gm(mask), gm(in.seqLenCount ? seqLens : nullptr),
                                 gm(deq1), gm(qs1), gm(deq2), gm(qs2), gm(qo2), gm(out), workspace.data(), gm(&td));
    }, &msg);
}

}  // namespace

extern "C" int ascend_attn_sim_incre_flash_attention_v2(
    const void* query, const void* key, const void* value, const int64_t* listSeq, void* out,
    const int64_t* actualSeqLengths,
    int64_t seqLenCount, const void* dequantScale1, const void* quantScale1, const void* dequantScale2,
    const void* quantScale2, const void* quantOffset2, const void* attenMask, const int64_t* maskShape,
    int64_t maskDimNum, const int64_t* shape, const int64_t* opts, float scaleValue, int64_t* info, char* msg,
    int64_t msgLen)
{
    return sim::GuardedCall([&](std::string& m) {
        return Run(query, key, value, listSeq, out, actualSeqLengths, seqLenCount, dequantScale1, quantScale1, dequantScale2,
                   quantScale2, quantOffset2, attenMask, maskShape, maskDimNum, shape, opts, scaleValue, info, m);
    }, msg, msgLen);
}
