/*
 * IncreFlashAttentionV2 tiling: a pure C++ function of shapes, attributes, core count and UB size.
 * See incre_flash_attention_v2_tiling.h for the work split and the scope.
 */
#include "incre_flash_attention_v2_tiling.h"

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <cstring>

namespace ascend_attn {
namespace ifa {

namespace {

constexpr uint64_t kBlk = 32;       // bytes of one DataBlock: every UB buffer is a multiple
constexpr uint32_t kKvAlign = 32;   // kvBlock granularity: int8 P rows stay 32-byte aligned
constexpr uint64_t kWsAlign = 512;  // workspace regions start 512-byte aligned

uint64_t Up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

int Fail(char* err, uint32_t len, int code, const char* fmt, ...)
{
    if (err != nullptr && len > 0) {
        va_list ap;
        va_start(ap, fmt);
        std::vsnprintf(err, len, fmt, ap);
        va_end(ap);
    }
    return code;
}

bool IsInt8Mode(uint32_t mode) { return mode == kModeInt8Fp16 || mode == kModeInt8Int8; }
bool IsInt8Out(uint32_t mode) { return mode == kModeQuantOut || mode == kModeInt8Int8; }

}  // namespace

// Mirrors the InitBuffer calls of IfaKernel::InitBuffers (op_kernel/incre_flash_attention_v2.cpp).
uint64_t IfaUbBytes(uint32_t mode, uint32_t groupSize, uint32_t headDim, uint32_t kvBlock, bool perChannel,
                    bool hasMask, bool split)
{
    const uint64_t g = groupSize, d = headDim, n = kvBlock;
    const uint64_t gd = g * d;
    const bool int8 = IsInt8Mode(mode);
    uint64_t bytes = 0;
    bytes += 2 * Up(g * n * (int8 ? 2 : 4), kBlk);  // inScore queue (mm1 results), double buffered
    bytes += 2 * Up(g * n * (int8 ? 1 : 2), kBlk);  // outProb queue (P for mm2), double buffered
    bytes += 2 * Up(gd * 4, kBlk);                  // inMm2 queue (mm2 results), double buffered
    bytes += Up(gd * 4, kBlk);                      // acc (float / int32)
    bytes += Up(gd * 4, kBlk);                      // o (float), final rows
    bytes += Up(g * n * 4, kBlk);                   // tmpF: float work rows
    bytes += Up(g * n * 2, kBlk);                   // tmpH: half work rows
    bytes += Up(std::max(n, d) * 4, kBlk) + kBlk;   // reduce work / row temp + reduce result
    bytes += Up(gd * 2, kBlk);                      // outQueue (half or int8 rows)
    bytes += Up(gd * 2, kBlk);                      // quantH: half rows of the output quantisation
    if (IsInt8Out(mode) && perChannel) {
        bytes += 2 * Up(gd * 4, kBlk);              // per-channel quant_scale2 / quant_offset2 rows
    }
    if (hasMask) {
        bytes += Up(n, kBlk) + Up(n * 2, kBlk) + Up((n + 7) / 8, kBlk);  // mask row u8, as half, as bits
    }
    if (split) {
        bytes += Up((gd + 2 * Up(g, 8)) * 4, kBlk);  // a flash-decode partial (acc, maxima, sums)
    }
    return bytes;
}

int IncreFlashAttentionV2Tiling(const IfaTilingInput& in, IncreFlashAttentionV2TilingData& t, char* err,
                                uint32_t errLen)
{
    std::memset(&t, 0, sizeof(t));
    if (err != nullptr && errLen > 0) {
        err[0] = '\0';
    }
    // ---- scope ---------------------------------------------------------------------------------
    const bool bnsd = in.layout != nullptr && std::strcmp(in.layout, "BNSD") == 0;
    if (in.layout == nullptr || (!bnsd && std::strcmp(in.layout, "BSH") != 0 && std::strcmp(in.layout, "BSND") != 0)) {
        return Fail(err, errLen, kTilingUnsupported, "input_layout %s: BSH, BSND or BNSD",
                    in.layout ? in.layout : "(null)");
    }
    if (in.hasPse || in.hasAntiquant || in.hasBlockTable || in.hasKvPadding) {
        return Fail(err, errLen, kTilingUnsupported,
                    "pse_shift, antiquant, paged KV and kv_padding_size are not implemented (CANN's V4 op)");
    }
    // ---- shapes --------------------------------------------------------------------------------
    if (in.batch == 0 || in.headsQ == 0 || in.seqQ != 1 || in.coreNum == 0 || in.ubSize == 0) {
        return Fail(err, errLen, kTilingInvalid, "batch, num_heads, core count and UB size must be > 0, query S == 1");
    }
    const uint32_t nkv = in.headsKv == 0 ? in.headsQ : in.headsKv;
    if (in.headsQ % nkv != 0) {
        return Fail(err, errLen, kTilingInvalid, "num_heads %u not a multiple of num_key_value_heads %u", in.headsQ, nkv);
    }
    const uint32_t g = in.headsQ / nkv;
    if (g > 64) {
        return Fail(err, errLen, kTilingInvalid, "num_heads / num_key_value_heads = %u > 64", g);
    }
    if (in.hidden % in.headsQ != 0) {
        return Fail(err, errLen, kTilingInvalid, "query hidden %u not a multiple of num_heads %u", in.hidden, in.headsQ);
    }
    const uint32_t d = in.hidden / in.headsQ;
    if (in.hiddenKv != nkv * d || in.keyBatch != in.batch) {  // tensor lists: one tensor per batch
        return Fail(err, errLen, kTilingInvalid, "key/value shape (%u, S, %u) does not match (B=%u, S, Nkv*D=%u)",
                    in.keyBatch, in.hiddenKv, in.batch, nkv * d);
    }
    if (d == 0 || d > 512 || d % 16 != 0) {
        return Fail(err, errLen, kTilingUnsupported, "head dim %u: must be a multiple of 16 in [16, 512]", d);
    }
    if (in.seqLenCount > 1 && in.seqLenCount < in.batch) {
        return Fail(err, errLen, kTilingInvalid, "actual_seq_lengths has %u elements, needs 1 or >= batch %u",
                    in.seqLenCount, in.batch);
    }
    // ---- scenario ------------------------------------------------------------------------------
    uint32_t mode;
    const bool anyFullQuant = in.hasDequant1 || in.hasQuant1 || in.hasDequant2;
    const bool bf16 = in.queryType == kBFloat16;
    if ((in.queryType == kFloat16 || bf16) && in.kvType == in.queryType) {
        if (anyFullQuant) {
            return Fail(err, errLen, kTilingInvalid, "dequant_scale1/quant_scale1/dequant_scale2 need int8 q/k/v");
        }
        mode = in.hasQuant2 ? kModeQuantOut : kModeFloat;
        if ((mode == kModeQuantOut) != (in.outType == kInt8) || (mode == kModeFloat && in.outType != in.queryType)) {
            return Fail(err, errLen, kTilingInvalid, "output dtype does not match the scenario");
        }
    } else if (in.queryType == kInt8 && in.kvType == kInt8) {
        if (!(in.hasDequant1 && in.hasQuant1 && in.hasDequant2)) {
            return Fail(err, errLen, kTilingInvalid, "int8 q/k/v need dequant_scale1, quant_scale1, dequant_scale2");
        }
        mode = in.hasQuant2 ? kModeInt8Int8 : kModeInt8Fp16;
        if (mode == kModeInt8Fp16 && in.hasQuantOffset2) {
            return Fail(err, errLen, kTilingInvalid, "quant_offset2 without quant_scale2");
        }
        if (in.outType != (mode == kModeInt8Int8 ? kInt8 : kFloat16)) {
            return Fail(err, errLen, kTilingInvalid, "output dtype does not match the scenario");
        }
        if (in.dequantType != kFloat32 && in.dequantType != kUint64 && in.dequantType != kInt64) {
            return Fail(err, errLen, kTilingInvalid, "dequant scales must be float32 or uint64/int64 words");
        }
    } else {
        return Fail(err, errLen, kTilingUnsupported, "q/k/v dtypes: fp16, bf16 or all int8 (mixed / antiquant: not implemented)");
    }
    bool perChannel = false;
    if (IsInt8Out(mode)) {
        if (in.quant2Type != kFloat32) {
            return Fail(err, errLen, kTilingUnsupported, "quant_scale2 / quant_offset2 must be float32");
        }
        if (in.quant2Elems != 1 && in.quant2Elems != in.headsQ * d) {
            return Fail(err, errLen, kTilingInvalid, "quant_scale2 has %u elements, needs 1 or Nq*D = %u",
                        in.quant2Elems, in.headsQ * d);
        }
        if (in.hasQuantOffset2 && in.quantOffset2Elems != in.quant2Elems) {
            return Fail(err, errLen, kTilingInvalid, "quant_offset2 must have quant_scale2's shape");
        }
        perChannel = in.quant2Elems != 1;
        if ((static_cast<uint64_t>(g) * d) % kBlk != 0) {
            return Fail(err, errLen, kTilingUnsupported, "int8 output rows of G*D = %u bytes are not 32-byte aligned",
                        g * d);
        }
    }
    // ---- multi-core split ----------------------------------------------------------------------
    const uint64_t items = static_cast<uint64_t>(in.batch) * nkv;
    const uint32_t cores = static_cast<uint32_t>(std::min<uint64_t>(items, in.coreNum));
    const uint32_t per = static_cast<uint32_t>((items + cores - 1) / cores);
    const uint32_t former = static_cast<uint32_t>(items - static_cast<uint64_t>(per - 1) * cores);
    // ---- KV block per UB loop ------------------------------------------------------------------
    const uint32_t seqAligned = static_cast<uint32_t>(Up(std::max<uint32_t>(in.seqKv, 1), kKvAlign));
    uint32_t cap = std::max<uint32_t>(in.maxKvBlock / kKvAlign * kKvAlign, kKvAlign);
    uint32_t kvBlock = std::min(seqAligned, cap);
    // ---- atten_mask rows ------------------------------------------------------------------------
    uint64_t maskBatchStride = 0, maskHeadStride = 0;
    if (in.hasMask) {
        const uint64_t* m = in.maskDims;
        const uint64_t sm = in.maskDimNum >= 2 ? m[in.maskDimNum - 1] : 0;
        const bool perBatch = (in.maskDimNum == 2 && m[0] == in.batch) ||
                              (in.maskDimNum == 3 && m[0] == in.batch && m[1] == 1) ||
                              (in.maskDimNum == 4 && m[0] == in.batch && m[1] == 1 && m[2] == 1);
        const bool perHead = in.maskDimNum == 4 && (m[0] == in.batch || m[0] == 1) && m[1] == in.headsQ && m[2] == 1;
        if (sm == 0 || !(perBatch || perHead)) {
            return Fail(err, errLen, kTilingInvalid,
                        "atten_mask must be (B,S), (B,1,S), (B,1,1,S), (B,Nq,1,S) or (1,Nq,1,S)");
        }
        maskBatchStride = perBatch ? sm : (m[0] == 1 ? 0 : static_cast<uint64_t>(in.headsQ) * sm);
        maskHeadStride = perBatch ? 0 : sm;
    }
    while (kvBlock >= kKvAlign && IfaUbBytes(mode, g, d, kvBlock, perChannel, in.hasMask) > in.ubSize) {
        kvBlock -= kKvAlign;
    }
    if (kvBlock < kKvAlign) {
        return Fail(err, errLen, kTilingNoFit, "G=%u, D=%u do not fit a 32-position KV block into %llu bytes of UB",
                    g, d, static_cast<unsigned long long>(in.ubSize));
    }
    // ---- flash-decode split: few items, long KV -> one item's positions over several cores --------
    // (float paths: the int8 scenarios need the global row max before P is quantised)
    // As CANN's IFA tiling (read after writing ours): split only while B*Nkv < 0.4 * cores, and keep at
    // least minSplitLen (512) positions per split, so that the combine step pays off.
    uint32_t splitNum = 1, splitChunk = 0;
    if (!IsInt8Mode(mode) && items * 10 < static_cast<uint64_t>(in.coreNum) * 4 && in.seqKv >= 2 * kvBlock) {
        const uint32_t blocks = (in.seqKv + kvBlock - 1) / kvBlock;
        splitNum = std::min<uint32_t>(std::min<uint32_t>(static_cast<uint32_t>(in.coreNum / items), blocks),
                                      in.maxSplit);
        while (splitNum > 1 && in.seqKv / splitNum < in.minSplitLen) {
            --splitNum;
        }
        if (splitNum >= 2) {
            splitChunk = static_cast<uint32_t>(Up((in.seqKv + splitNum - 1) / splitNum, kvBlock));
            splitNum = (in.seqKv + splitChunk - 1) / splitChunk;  // no empty trailing split
        }
        if (splitNum < 2 || IfaUbBytes(mode, g, d, kvBlock, perChannel, in.hasMask, true) > in.ubSize) {
            splitNum = 1;
            splitChunk = 0;
        }
    }
    // ---- fill ----------------------------------------------------------------------------------
    const bool int8 = IsInt8Mode(mode);
    t.batch = in.batch;
    t.headsQ = in.headsQ;
    t.headsKv = nkv;
    t.groupSize = g;
    t.headDim = d;
    t.seqKv = in.seqKv;
    t.seqLenCount = in.seqLenCount;
    t.mode = mode;
    t.quantPerChannel = perChannel ? 1 : 0;
    t.hasQuantOffset = (IsInt8Out(mode) && in.hasQuantOffset2) ? 1 : 0;
    t.deqIsFloat = (int8 && in.dequantType == kFloat32) ? 1 : 0;
    t.scaleValue = in.scaleValue;
    t.inputBf16 = bf16 ? 1 : 0;
    t.tilingKey = mode + (bf16 ? 4u : 0u);
    t.usedCoreNum = splitNum > 1 ? static_cast<uint32_t>(items * splitNum) : cores;
    t.itemsPerCore = splitNum > 1 ? 1 : per;
    t.formerCoreNum = splitNum > 1 ? t.usedCoreNum : former;
    t.kvBnsd = bnsd ? 1 : 0;
    t.kvList = in.kvIsList ? 1 : 0;
    t.kvDesc = (in.kvIsList || in.kvAsDescriptor) ? 1 : 0;
    t.splitNum = splitNum;
    t.splitChunk = splitChunk;
    t.kvBlock = kvBlock;
    t.seqKvAlign = static_cast<uint32_t>(Up(std::max<uint32_t>(in.seqKv, 1), kvBlock));
    t.ubBytes = static_cast<uint32_t>(IfaUbBytes(mode, g, d, kvBlock, perChannel, in.hasMask, splitNum > 1));
    t.hasMask = in.hasMask ? 1 : 0;
    t.maskBatchStride = maskBatchStride;
    t.maskHeadStride = maskHeadStride;
    const uint64_t scoreBytes = static_cast<uint64_t>(g) * (int8 ? t.seqKvAlign * 2ull : kvBlock * 4ull);
    const uint64_t probBytes = static_cast<uint64_t>(g) * kvBlock * (int8 ? 1 : 2);
    const uint64_t mm2Bytes = static_cast<uint64_t>(g) * d * 4;
    t.wsScoreOffset = 0;
    t.wsProbOffset = Up(scoreBytes, kWsAlign);
    t.wsMm2Offset = t.wsProbOffset + Up(probBytes, kWsAlign);
    t.wsPerCore = t.wsMm2Offset + Up(mm2Bytes, kWsAlign);
    t.wsSplitOffset = t.wsPerCore * t.usedCoreNum;
    t.wsSplitBytes = splitNum > 1 ? Up(static_cast<uint64_t>(g) * d * 4 + 2 * Up(g, 8) * 4, kWsAlign) : 0;
    t.workspaceSize = t.wsSplitOffset + t.wsSplitBytes * (splitNum > 1 ? t.usedCoreNum : 0);
    // Matmul base blocks: L0A holds baseM x baseK, L0B baseK x baseN, L0C baseM x baseN (fp32 /
    // int32); each kept within half of its buffer (double buffering).
    const uint64_t elemAB = int8 ? 1 : 2;
    const uint64_t kAlign = 32 / elemAB;
    const uint32_t baseM = static_cast<uint32_t>(Up(g, 16));
    auto shape = [&](uint32_t n, uint32_t k) {
        const uint32_t baseN = static_cast<uint32_t>(std::min<uint64_t>(Up(n, 16), 128));
        const uint64_t maxK = std::min(in.l0aSize / 2 / (baseM * elemAB), in.l0bSize / 2 / (baseN * elemAB)) / kAlign * kAlign;
        const uint32_t baseK = static_cast<uint32_t>(std::max<uint64_t>(std::min<uint64_t>(Up(k, kAlign), maxK), kAlign));
        return IfaMatmulShape{g, n, k, k, baseM, baseN, baseK, 0};
    };
    t.mm1 = shape(kvBlock, d);
    t.mm2 = shape(d, kvBlock);
    return kTilingOk;
}

}  // namespace ifa
}  // namespace ascend_attn
