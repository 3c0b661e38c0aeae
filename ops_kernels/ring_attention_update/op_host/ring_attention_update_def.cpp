/*
 * AscendAttnRingAttentionUpdate (CANN's RingAttentionUpdateV2 contract under the package's own OpType): CANN adapters (CANN build only; the host simulation never compiles this file).
 *
 *   OpDef        inputs / outputs / attributes of semantics.md §1, AddConfig("ascend910b")
 *   InferShape   outputs shaped like prev_attn_out / prev_softmax_max / prev_softmax_sum
 *   TilingFunc   thin adapter: reads shapes, dtype, attributes and the platform (vector cores,
 *                UB size), calls the pure ComputeRingAttentionUpdateTiling, stores the plain
 *                tiling struct, block dim and tiling key (= attention dtype code).
 */
#ifndef ASCEND_ATTN_HOST_SIM

#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "ring_attention_update_tiling.h"

namespace optiling {

namespace {
constexpr size_t kPrevAttnOut = 0;
constexpr size_t kPrevSoftmaxMax = 1;
constexpr size_t kActualSeqQlen = 6;
constexpr size_t kAttrInputLayout = 0;
constexpr size_t kAttrSoftmaxLayout = 1;

ge::graphStatus Reject(const std::string& why)
{
    std::fprintf(stderr, "[ascend_attn] %s\n", why.c_str());
    return ge::GRAPH_FAILED;
}
}  // namespace

static ge::graphStatus RingAttentionUpdateTilingFunc(gert::TilingContext* context)
{
    using namespace ascend_attn::rau;
    RingAttentionUpdateShapeInfo info;

    const gert::StorageShape* attn = context->GetInputShape(kPrevAttnOut);
    const gert::StorageShape* stats = context->GetInputShape(kPrevSoftmaxMax);
    const gert::CompileTimeTensorDesc* attnDesc = context->GetInputDesc(kPrevAttnOut);
    if (attn == nullptr || stats == nullptr || attnDesc == nullptr) {
        return Reject("RingAttentionUpdate: missing input shape");
    }
    const gert::Shape& a = attn->GetStorageShape();
    const gert::Shape& s = stats->GetStorageShape();
    info.attnDimNum = static_cast<int64_t>(a.GetDimNum());
    info.statsDimNum = static_cast<int64_t>(s.GetDimNum());
    for (size_t i = 0; i < a.GetDimNum() && i < 3; ++i) {
        info.attnShape[i] = a.GetDim(i);
    }
    for (size_t i = 0; i < s.GetDimNum() && i < 4; ++i) {
        info.statsShape[i] = s.GetDim(i);
    }
    switch (attnDesc->GetDataType()) {
        case ge::DT_FLOAT16: info.attnDtype = kFloat16; break;
        case ge::DT_BF16: info.attnDtype = kBFloat16; break;
        case ge::DT_FLOAT: info.attnDtype = kFloat32; break;
        default: return Reject("RingAttentionUpdate: attention dtype must be float16, bfloat16 or float32");
    }

    const gert::RuntimeAttrs* attrs = context->GetAttrs();
    const char* layout = attrs ? attrs->GetAttrPointer<char>(kAttrInputLayout) : nullptr;
    const char* smLayout = attrs ? attrs->GetAttrPointer<char>(kAttrSoftmaxLayout) : nullptr;
    info.inputLayout = layout ? layout : "SBH";
    info.softmaxLayout = smLayout ? smLayout : "";
    const gert::StorageShape* seq = context->GetOptionalInputShape(kActualSeqQlen);
    info.actualSeqQlenNum = seq ? seq->GetStorageShape().GetShapeSize() : -1;

    auto platform = platform_ascendc::PlatformAscendC(context->GetPlatformInfo());
    uint64_t ubSize = 0;
    platform.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ubSize);
    info.coreNum = static_cast<int64_t>(platform.GetCoreNumAiv());
    info.ubSize = static_cast<int64_t>(ubSize);

    RingAttentionUpdateTilingData tiling;
    std::string error;
    if (!ComputeRingAttentionUpdateTiling(info, tiling, error)) {
        return Reject(error);
    }
    gert::TilingData* raw = context->GetRawTilingData();
    if (raw == nullptr || raw->GetCapacity() < sizeof(tiling)) {
        return Reject("RingAttentionUpdate: tiling buffer too small");
    }
    std::memcpy(raw->GetData(), &tiling, sizeof(tiling));
    raw->SetDataSize(sizeof(tiling));
    context->SetBlockDim(static_cast<uint32_t>(tiling.usedCoreNum));
    context->SetTilingKey(static_cast<uint64_t>(tiling.attnDtype));
    size_t* workspace = context->GetWorkspaceSizes(1);
    workspace[0] = static_cast<size_t>(platform.GetLibApiWorkSpaceSize());
    return ge::GRAPH_SUCCESS;
}

}  // namespace optiling

namespace ge {

static graphStatus RingAttentionUpdateInferShape(gert::InferShapeContext* context)
{
    // attn_out, softmax_max, softmax_sum take the shapes of inputs 0, 1, 2
    for (size_t i = 0; i < 3; ++i) {
        const gert::Shape* in = context->GetInputShape(i);
        gert::Shape* out = context->GetOutputShape(i);
        if (in == nullptr || out == nullptr) {
            return GRAPH_FAILED;
        }
        *out = *in;
    }
    return GRAPH_SUCCESS;
}

static graphStatus RingAttentionUpdateInferDataType(gert::InferDataTypeContext* context)
{
    for (size_t i = 0; i < 3; ++i) {
        context->SetOutputDataType(i, context->GetInputDataType(i));
    }
    return GRAPH_SUCCESS;
}

}  // namespace ge

namespace ops {

class AscendAttnRingAttentionUpdate : public OpDef {
public:
    explicit AscendAttnRingAttentionUpdate(const char* name) : OpDef(name)
    {
        // one column per supported attention dtype
        const std::vector<ge::DataType> attnTypes = {ge::DT_FLOAT16, ge::DT_BF16, ge::DT_FLOAT};
        const std::vector<ge::DataType> statTypes = {ge::DT_FLOAT, ge::DT_FLOAT, ge::DT_FLOAT};
        const std::vector<ge::DataType> seqTypes = {ge::DT_INT64, ge::DT_INT64, ge::DT_INT64};
        const std::vector<ge::Format> nd = {ge::FORMAT_ND, ge::FORMAT_ND, ge::FORMAT_ND};
        const char* const inputs[] = {"prev_attn_out", "prev_softmax_max", "prev_softmax_sum",
                                      "cur_attn_out", "cur_softmax_max", "cur_softmax_sum"};
        for (size_t i = 0; i < 6; ++i) {
            this->Input(inputs[i])
                .ParamType(REQUIRED)
                .DataType(i % 3 == 0 ? attnTypes : statTypes)
                .Format(nd)
                .UnknownShapeFormat(nd)
                .AutoContiguous();
        }
        this->Input("actual_seq_qlen").ParamType(OPTIONAL).DataType(seqTypes).Format(nd).UnknownShapeFormat(nd);
        this->Output("attn_out").ParamType(REQUIRED).DataType(attnTypes).Format(nd).UnknownShapeFormat(nd);
        this->Output("softmax_max").ParamType(REQUIRED).DataType(statTypes).Format(nd).UnknownShapeFormat(nd);
        this->Output("softmax_sum").ParamType(REQUIRED).DataType(statTypes).Format(nd).UnknownShapeFormat(nd);
        this->Attr("input_layout").AttrType(OPTIONAL).String("SBH");
        this->Attr("input_softmax_layout").AttrType(OPTIONAL).String("");

        this->SetInferShape(ge::RingAttentionUpdateInferShape).SetInferDataType(ge::RingAttentionUpdateInferDataType);
        this->AICore().SetTiling(optiling::RingAttentionUpdateTilingFunc);
        this->AICore().AddConfig("ascend910b");
    }
};

OP_ADD(AscendAttnRingAttentionUpdate);

}  // namespace ops

#endif  // ASCEND_ATTN_HOST_SIM
