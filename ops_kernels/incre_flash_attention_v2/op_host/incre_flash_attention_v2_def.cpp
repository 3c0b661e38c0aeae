/*
 * AscendAttnIncreFlashAttentionV2 (CANN's IncreFlashAttentionV2 contract under the package's own OpType): OpDef, InferShape / InferDataType and the thin
 * TilingFunc adapter. CANN build only: everything numeric lives in the pure tiling function
 * (incre_flash_attention_v2_tiling.cpp), which the host simulation calls directly.
 *
 * Inputs follow the V2 prototype: query, key, value, pse_shift, atten_mask, actual_seq_lengths
 * (int64 tensor), dequant_scale1, quant_scale1, dequant_scale2, quant_scale2, quant_offset2.
 * Scenarios (semantics.md §7.5): float (fp16/bf16 -> same), C (fp16/bf16 -> int8), B (int8 -> fp16),
 * A (int8 -> int8). actual_seq_lengths is read by the kernel only (no value dependency). key / value are
 * DYNAMIC (aclTensorList): one (B, S, ...) tensor or one (1, S_b, ...) tensor per batch; the kernel
 * receives list descriptors either way.
 */
#ifndef ASCEND_ATTN_HOST_SIM
#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"

#include "incre_flash_attention_v2_tiling.h"

namespace {

enum InputIndex : size_t {
    kQuery = 0, kKey, kValue, kPseShift, kAttenMask, kActualSeqLengths,
    kDequantScale1, kQuantScale1, kDequantScale2, kQuantScale2, kQuantOffset2,
};

ascend_attn::ifa::DType ToDType(ge::DataType t)
{
    switch (t) {
        case ge::DT_FLOAT16: return ascend_attn::ifa::kFloat16;
        case ge::DT_INT8: return ascend_attn::ifa::kInt8;
        case ge::DT_FLOAT: return ascend_attn::ifa::kFloat32;
        case ge::DT_INT64: return ascend_attn::ifa::kInt64;
        case ge::DT_UINT64: return ascend_attn::ifa::kUint64;
        case ge::DT_BF16: return ascend_attn::ifa::kBFloat16;
        default: return ascend_attn::ifa::kOther;
    }
}

}  // namespace

namespace optiling {

static ge::graphStatus IncreFlashAttentionV2TilingFunc(gert::TilingContext* context)
{
    using namespace ascend_attn::ifa;
    IfaTilingInput in;
    // key / value are DYNAMIC inputs (aclTensorList, as CANN's V2 prototype): one tensor, or one per batch
    const gert::StorageShape* q = context->GetInputShape(kQuery);
    const gert::StorageShape* k = context->GetDynamicInputShape(kKey, 0);
    if (q == nullptr || k == nullptr) {
        return ge::GRAPH_FAILED;
    }
    const gert::Shape& qs = q->GetStorageShape();
    const auto* attrs = context->GetAttrs();
    in.headsQ = static_cast<uint32_t>(*attrs->GetAttrPointer<int64_t>(0));
    in.scaleValue = *attrs->GetAttrPointer<float>(1);
    in.layout = attrs->GetAttrPointer<char>(2);
    in.headsKv = static_cast<uint32_t>(*attrs->GetAttrPointer<int64_t>(3));
    const std::string layout = in.layout == nullptr ? "BSH" : in.layout;
    const size_t rank = layout == "BSH" ? 3 : 4;
    const size_t seqDim = layout == "BNSD" ? 2 : 1;
    if (qs.GetDimNum() != rank) {
        return ge::GRAPH_FAILED;
    }
    in.batch = static_cast<uint32_t>(qs.GetDim(0));
    in.seqQ = static_cast<uint32_t>(qs.GetDim(seqDim));
    const uint32_t nkv = in.headsKv == 0 ? in.headsQ : in.headsKv;
    in.hidden = static_cast<uint32_t>(rank == 3 ? qs.GetDim(2) : in.headsQ * qs.GetDim(3));
    // tensor list: one (1, S_b, ...) tensor per batch; seqKv = the largest S_b
    uint32_t listLen = 0;
    while (context->GetDynamicInputShape(kKey, listLen) != nullptr) {
        ++listLen;
    }
    in.kvIsList = listLen > 1;  // a list of one is the (B, S, ...) tensor itself
    in.kvAsDescriptor = true;    // DYNAMIC inputs reach the kernel as ListTensorDesc blocks
    in.keyBatch = in.kvIsList ? listLen : static_cast<uint32_t>(k->GetStorageShape().GetDim(0));
    in.seqKv = 0;
    for (uint32_t i = 0; i < (in.kvIsList ? listLen : 1u); ++i) {
        const gert::Shape& ks = context->GetDynamicInputShape(kKey, i)->GetStorageShape();
        if (ks.GetDimNum() != rank) {
            return ge::GRAPH_FAILED;
        }
        in.seqKv = std::max<uint32_t>(in.seqKv, static_cast<uint32_t>(ks.GetDim(seqDim)));
        in.hiddenKv = static_cast<uint32_t>(rank == 3 ? ks.GetDim(2) : nkv * ks.GetDim(3));
    }
    in.queryType = ToDType(context->GetInputDesc(kQuery)->GetDataType());
    in.kvType = ToDType(context->GetDynamicInputDesc(kKey, 0)->GetDataType());
    in.outType = ToDType(context->GetOutputDesc(0)->GetDataType());
    in.hasPse = context->GetOptionalInputShape(kPseShift) != nullptr;
    const gert::StorageShape* mask = context->GetOptionalInputShape(kAttenMask);
    in.hasMask = mask != nullptr;
    if (mask != nullptr) {
        const gert::Shape& ms = mask->GetStorageShape();
        in.maskDimNum = static_cast<uint32_t>(ms.GetDimNum());
        for (size_t i = 0; i < ms.GetDimNum() && i < 4; ++i) {
            in.maskDims[i] = static_cast<uint64_t>(ms.GetDim(i));
        }
    }
    const gert::StorageShape* seq = context->GetOptionalInputShape(kActualSeqLengths);
    in.seqLenCount = seq == nullptr ? 0 : static_cast<uint32_t>(seq->GetStorageShape().GetShapeSize());
    in.hasDequant1 = context->GetOptionalInputShape(kDequantScale1) != nullptr;
    in.hasQuant1 = context->GetOptionalInputShape(kQuantScale1) != nullptr;
    in.hasDequant2 = context->GetOptionalInputShape(kDequantScale2) != nullptr;
    if (in.hasDequant1) {
        in.dequantType = ToDType(context->GetOptionalInputDesc(kDequantScale1)->GetDataType());
    }
    const gert::StorageShape* qs2 = context->GetOptionalInputShape(kQuantScale2);
    const gert::StorageShape* qo2 = context->GetOptionalInputShape(kQuantOffset2);
    in.hasQuant2 = qs2 != nullptr;
    in.hasQuantOffset2 = qo2 != nullptr;
    if (qs2 != nullptr) {
        in.quant2Elems = static_cast<uint32_t>(qs2->GetStorageShape().GetShapeSize());
        in.quant2Type = ToDType(context->GetOptionalInputDesc(kQuantScale2)->GetDataType());
    }
    if (qo2 != nullptr) {
        in.quantOffset2Elems = static_cast<uint32_t>(qo2->GetStorageShape().GetShapeSize());
    }
    auto platform = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    in.coreNum = platform.GetCoreNumAic();  // one AIC + one AIV per work range (MIX 1:1)
    uint64_t ub = 0;
    platform.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    in.ubSize = ub;

    IncreFlashAttentionV2TilingData td;
    char err[256];
    if (IncreFlashAttentionV2Tiling(in, td, err, sizeof(err)) != kTilingOk) {
        return ge::GRAPH_FAILED;
    }
    auto* raw = context->GetRawTilingData();
    if (raw->GetCapacity() < sizeof(td)) {
        return ge::GRAPH_FAILED;
    }
    std::memcpy(raw->GetData(), &td, sizeof(td));
    raw->SetDataSize(sizeof(td));
    context->SetTilingKey(td.tilingKey);
    context->SetBlockDim(td.usedCoreNum);
    size_t* ws = context->GetWorkspaceSizes(1);
    ws[0] = platform.GetLibApiWorkSpaceSize() + td.workspaceSize;
    return ge::GRAPH_SUCCESS;
}

}  // namespace optiling

namespace ge {

static graphStatus IncreFlashAttentionV2InferShape(gert::InferShapeContext* context)
{
    const gert::Shape* q = context->GetInputShape(kQuery);
    gert::Shape* out = context->GetOutputShape(0);
    if (q == nullptr || out == nullptr) {
        return GRAPH_FAILED;
    }
    *out = *q;  // output shape = query shape
    return GRAPH_SUCCESS;
}

static graphStatus IncreFlashAttentionV2InferDataType(gert::InferDataTypeContext* context)
{
    // quant_scale2 given -> int8; int8 query without it -> fp16 (scenario B); else the query dtype
    const DataType q = context->GetInputDataType(kQuery);
    DataType out = q == DT_INT8 ? DT_FLOAT16 : q;
    if (context->GetOptionalInputDataType(kQuantScale2) != DT_UNDEFINED) {
        out = DT_INT8;
    }
    context->SetOutputDataType(0, out);
    return GRAPH_SUCCESS;
}

}  // namespace ge

namespace ops {

class AscendAttnIncreFlashAttentionV2 : public OpDef {
public:
    explicit AscendAttnIncreFlashAttentionV2(const char* name) : OpDef(name)
    {
        // Supported combinations, one column each: fp16 float, fp16 C, bf16 float, bf16 C,
        // B/A with uint64 words, B/A with float32 dequant values.
        const std::vector<ge::DataType> qkv = {ge::DT_FLOAT16, ge::DT_FLOAT16, ge::DT_BF16, ge::DT_BF16,
                                               ge::DT_INT8, ge::DT_INT8, ge::DT_INT8, ge::DT_INT8};
        const std::vector<ge::DataType> out = {ge::DT_FLOAT16, ge::DT_INT8, ge::DT_BF16, ge::DT_INT8,
                                               ge::DT_FLOAT16, ge::DT_INT8, ge::DT_FLOAT16, ge::DT_INT8};
        const std::vector<ge::DataType> deq = {ge::DT_UINT64, ge::DT_UINT64, ge::DT_UINT64, ge::DT_UINT64,
                                               ge::DT_UINT64, ge::DT_UINT64, ge::DT_FLOAT, ge::DT_FLOAT};
        // pse_shift (not implemented yet) has the query dtype, fp16 for an int8 query
        const std::vector<ge::DataType> pse = {ge::DT_FLOAT16, ge::DT_FLOAT16, ge::DT_BF16, ge::DT_BF16,
                                               ge::DT_FLOAT16, ge::DT_FLOAT16, ge::DT_FLOAT16, ge::DT_FLOAT16};
        const std::vector<ge::DataType> f32(qkv.size(), ge::DT_FLOAT);
        const std::vector<ge::DataType> i64(qkv.size(), ge::DT_INT64);
        const std::vector<ge::DataType> msk(qkv.size(), ge::DT_BOOL);  // int8 / uint8 masks: same bytes
        const std::vector<ge::Format> nd(qkv.size(), ge::FORMAT_ND);

        this->Input("query").ParamType(REQUIRED).DataType(qkv).Format(nd).UnknownShapeFormat(nd);
        this->Input("key").ParamType(DYNAMIC).DataType(qkv).Format(nd).UnknownShapeFormat(nd);
        this->Input("value").ParamType(DYNAMIC).DataType(qkv).Format(nd).UnknownShapeFormat(nd);
        this->Input("pse_shift").ParamType(OPTIONAL).DataType(pse).Format(nd).UnknownShapeFormat(nd);
        this->Input("atten_mask").ParamType(OPTIONAL).DataType(msk).Format(nd).UnknownShapeFormat(nd);
        this->Input("actual_seq_lengths").ParamType(OPTIONAL).DataType(i64).Format(nd).UnknownShapeFormat(nd);
        this->Input("dequant_scale1").ParamType(OPTIONAL).DataType(deq).Format(nd).UnknownShapeFormat(nd);
        this->Input("quant_scale1").ParamType(OPTIONAL).DataType(f32).Format(nd).UnknownShapeFormat(nd);
        this->Input("dequant_scale2").ParamType(OPTIONAL).DataType(deq).Format(nd).UnknownShapeFormat(nd);
        this->Input("quant_scale2").ParamType(OPTIONAL).DataType(f32).Format(nd).UnknownShapeFormat(nd);
        this->Input("quant_offset2").ParamType(OPTIONAL).DataType(f32).Format(nd).UnknownShapeFormat(nd);
        this->Output("attention_out").ParamType(REQUIRED).DataType(out).Format(nd).UnknownShapeFormat(nd);

        this->Attr("num_heads").AttrType(REQUIRED).Int(1);
        this->Attr("scale_value").AttrType(OPTIONAL).Float(1.0f);
        this->Attr("input_layout").AttrType(OPTIONAL).String("BSH");
        this->Attr("num_key_value_heads").AttrType(OPTIONAL).Int(0);
        this->Attr("block_size").AttrType(OPTIONAL).Int(0);
        this->Attr("inner_precise").AttrType(OPTIONAL).Int(1);

        this->SetInferShape(ge::IncreFlashAttentionV2InferShape).SetInferDataType(ge::IncreFlashAttentionV2InferDataType);
        this->AICore().SetTiling(optiling::IncreFlashAttentionV2TilingFunc);
        this->AICore().AddConfig("ascend910b");
    }
};

OP_ADD(AscendAttnIncreFlashAttentionV2);

}  // namespace ops

#endif  // ASCEND_ATTN_HOST_SIM
