/*
 * AscendAttnFlashAttentionUnpaddingScoreGradV4 (the contract of CANN's FlashAttentionUnpaddingScoreGradV4 under the package's own OpType) — OpDef, InferShape and the thin TilingFunc (CANN build only;
 * the host simulation calls fag_v4::ComputeFagV4Tiling directly).
 *
 * Inputs (IR order; optional ones are addressed by IR index) / outputs / attributes follow
 * semantics.md §3 (aclnnFlashAttentionUnpaddingScoreGradV4):
 * TND only, query [T1, N1, D], key / value [T2, N2, D], dy / attention_in like query, softmax_max /
 * softmax_sum fp32 [T1, N1, 8] (NTD data for softmax_in_layout "", TND for "same_as_input"),
 * actual_seq_qlen / actual_seq_kvlen int64 cumulative lengths (value-dependent).
 * Outputs dq, dk, dv (input dtype) and dpse (always empty, §9k).
 */
#ifndef ASCEND_ATTN_HOST_SIM
#include <cstring>
#include <string>
#include <vector>

#include "flash_attention_unpadding_score_grad_v4_tiling.h"
#include "register/op_def_registry.h"
#include "tiling/platform/platform_ascendc.h"
#include "tiling/tiling_api.h"

namespace {
enum InputIndex : int {
    kQuery = 0, kKey, kValue, kDy, kPseShift, kDropMask, kPaddingMask, kAttenMask, kSoftmaxMax, kSoftmaxSum,
    kSoftmaxIn, kAttentionIn, kPrefix, kActualSeqQlen, kActualSeqKvlen, kQStartIdx, kKvStartIdx,
};
enum AttrIndex : int {
    kAttrScale = 0, kAttrKeepProb, kAttrPreTokens, kAttrNextTokens, kAttrHeadNum, kAttrInputLayout,
    kAttrInnerPrecise, kAttrSparseMode, kAttrPseType, kAttrSeed, kAttrOffset, kAttrSoftmaxInLayout,
};

bool ReadHostInt64(gert::TilingContext* ctx, int index, std::vector<int64_t>& out)
{
    const gert::Tensor* t = ctx->GetOptionalInputTensor(index);
    if (t == nullptr || t->GetData<int64_t>() == nullptr) {
        return false;
    }
    const int64_t n = t->GetShapeSize();
    out.assign(t->GetData<int64_t>(), t->GetData<int64_t>() + n);
    return true;
}

// Full-mask form of sparse_mode 0 / 1 (semantics.md §4): [maxS1, maxS2] local (wins when both
// shapes coincide) or [T1, T2] global; 0 = neither.
uint32_t FullMaskForm(const gert::Shape& m, int64_t maxS1, int64_t maxS2, int64_t t1, int64_t t2)
{
    if (m.GetDimNum() != 2) {
        return 0;
    }
    if (m.GetDim(0) == maxS1 && m.GetDim(1) == maxS2) {
        return 1;
    }
    return (m.GetDim(0) == t1 && m.GetDim(1) == t2) ? 2u : 0u;
}

// pse form (semantics.md §5) from pse_type and the shape; 0 = none of the forms.
uint32_t PseForm(int64_t pseType, const gert::Shape& p, int64_t n1, int64_t pairs, int64_t sumS2)
{
    if (pseType >= 2) {
        return fag_v4::kPseSlopes;
    }
    if (p.GetDimNum() == 1) {
        return p.GetDim(0) == n1 * pairs ? fag_v4::kPseFull : (p.GetDim(0) == n1 * sumS2 ? fag_v4::kPseRow : 0u);
    }
    return p.GetDimNum() == 4 ? fag_v4::kPseAlibi : 0u;
}

// Real cube tilings from the Matmul tiling library (the pure function fills simplified ones).
bool CubeTiling(const platform_ascendc::PlatformAscendC& plat, matmul_tiling::DataType inType, uint32_t m,
                uint32_t n, uint32_t k, bool transA, bool transB, AscendC::tiling::TCubeTiling& out)
{
    matmul_tiling::MatmulApiTiling mm(plat);
    mm.SetAType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, inType, transA);
    mm.SetBType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, inType, transB);
    mm.SetCType(matmul_tiling::TPosition::GM, matmul_tiling::CubeFormat::ND, matmul_tiling::DataType::DT_FLOAT);
    mm.SetShape(m, n, k);
    mm.SetOrgShape(m, n, k);
    mm.SetBias(false);
    mm.SetBufferSpace(-1, -1, -1);
    return mm.GetTiling(out) != -1;
}
}  // namespace

namespace optiling {

static ge::graphStatus FagV4TilingFunc(gert::TilingContext* ctx)
{
    const gert::StorageShape* q = ctx->GetInputShape(kQuery);
    const gert::StorageShape* k = ctx->GetInputShape(kKey);
    if (q == nullptr || k == nullptr || q->GetStorageShape().GetDimNum() != 3) {
        return ge::GRAPH_FAILED;
    }
    const auto* attrs = ctx->GetAttrs();
    fag_v4::FagV4TilingInput in;
    in.t1 = q->GetStorageShape().GetDim(0);
    in.n1 = q->GetStorageShape().GetDim(1);
    in.d = q->GetStorageShape().GetDim(2);
    in.t2 = k->GetStorageShape().GetDim(0);
    in.n2 = k->GetStorageShape().GetDim(1);
    const ge::DataType dt = ctx->GetInputDesc(kQuery)->GetDataType();
    in.dtypeBytes = dt == ge::DT_FLOAT ? 4 : 2;
    in.bf16 = dt == ge::DT_BF16;
    std::vector<int64_t> cumQ, cumKv;
    if (!ReadHostInt64(ctx, kActualSeqQlen, cumQ) || !ReadHostInt64(ctx, kActualSeqKvlen, cumKv) ||
        cumQ.size() != cumKv.size()) {
        return ge::GRAPH_FAILED;
    }
    std::vector<int64_t> prefix;
    if (ReadHostInt64(ctx, kPrefix, prefix)) {
        if (prefix.size() < cumQ.size()) {
            return ge::GRAPH_FAILED;
        }
        in.prefix = prefix.data();
    }
    in.cumQ = cumQ.data();
    in.cumKv = cumKv.data();
    in.batch = static_cast<uint32_t>(cumQ.size());
    in.scale = *attrs->GetAttrPointer<float>(kAttrScale);
    in.keepProb = *attrs->GetAttrPointer<float>(kAttrKeepProb);
    in.sparseMode = *attrs->GetAttrPointer<int64_t>(kAttrSparseMode);
    in.preTokens = *attrs->GetAttrPointer<int64_t>(kAttrPreTokens);
    in.nextTokens = *attrs->GetAttrPointer<int64_t>(kAttrNextTokens);
    in.hasDropMask = ctx->GetOptionalInputShape(kDropMask) != nullptr;
    in.deterministic = ctx->GetDeterministic() == 1;  // the framework's deterministic switch
    int64_t prevQ = 0, prevK = 0, maxS1 = 0, maxS2 = 0, pairs = 0;
    for (size_t b = 0; b < cumQ.size(); ++b) {
        const int64_t s1 = std::max<int64_t>(0, cumQ[b] - prevQ), s2 = std::max<int64_t>(0, cumKv[b] - prevK);
        prevQ = cumQ[b];
        prevK = cumKv[b];
        maxS1 = std::max(maxS1, s1);
        maxS2 = std::max(maxS2, s2);
        pairs += s1 * s2;
    }
    const gert::StorageShape* mask = ctx->GetOptionalInputShape(kAttenMask);
    in.hasAttenMask = mask != nullptr;
    if (mask != nullptr && (in.sparseMode == 0 || in.sparseMode == 1)) {
        in.maskForm = FullMaskForm(mask->GetStorageShape(), maxS1, maxS2, in.t1, in.t2);
        in.maskCols = mask->GetStorageShape().GetDim(1);
    }
    const gert::StorageShape* pse = ctx->GetOptionalInputShape(kPseShift);
    in.hasPse = pse != nullptr;
    if (pse != nullptr) {
        const gert::Shape& ps = pse->GetStorageShape();
        in.pseType = *attrs->GetAttrPointer<int64_t>(kAttrPseType);
        in.pseForm = PseForm(in.pseType, ps, in.n1, pairs, prevK);
        in.pseBatch = ps.GetDimNum() >= 2 ? ps.GetDim(0) : 1;
        in.pseSRef = ps.GetDimNum() == 4 ? ps.GetDim(3) : 0;
        std::vector<int64_t> start;
        in.qStartIdx = ReadHostInt64(ctx, kQStartIdx, start) && !start.empty() ? start[0] : 0;
        in.kvStartIdx = ReadHostInt64(ctx, kKvStartIdx, start) && !start.empty() ? start[0] : 0;
    }
    const char* layout = attrs->GetAttrPointer<char>(kAttrSoftmaxInLayout);
    in.softmaxTnd = layout != nullptr && std::string(layout) == "same_as_input";

    auto plat = platform_ascendc::PlatformAscendC(ctx->GetPlatformInfo());
    uint64_t ub = 0;
    plat.GetCoreMemSize(platform_ascendc::CoreMemType::UB, ub);
    in.ubSize = ub;
    in.coreNum = plat.GetCoreNumAiv();

    auto* tiling = ctx->GetTilingData<fag_v4::FagV4TilingData>();
    const fag_v4::FagV4TilingResult r = fag_v4::ComputeFagV4Tiling(in, *tiling);
    if (r.status != 0) {
        return ge::GRAPH_FAILED;  // the package's Python layer falls back to the CPU path first
    }
    const auto inType = dt == ge::DT_FLOAT ? matmul_tiling::DataType::DT_FLOAT
                        : (dt == ge::DT_BF16 ? matmul_tiling::DataType::DT_BF16 : matmul_tiling::DataType::DT_FLOAT16);
    if (!CubeTiling(plat, inType, tiling->s1Block, tiling->s2Block, tiling->d, false, true, tiling->mmScore) ||
        !CubeTiling(plat, inType, tiling->s1Block, tiling->d, tiling->s2Block, false, false, tiling->mmDq) ||
        !CubeTiling(plat, inType, tiling->s2Block, tiling->d, tiling->s1Block, true, false, tiling->mmDkv)) {
        return ge::GRAPH_FAILED;
    }
    ctx->SetTilingKey(r.tilingKey);
    // MIX 1:2 launch: r.blockDim vector cores -> the number of AI cores (one AIC + two AIV each)
    ctx->SetBlockDim(plat.CalcTschBlockDim(r.blockDim, plat.GetCoreNumAic(), plat.GetCoreNumAiv()));
    size_t* ws = ctx->GetWorkspaceSizes(1);
    ws[0] = r.workspaceUser + plat.GetLibApiWorkSpaceSize();
    return ge::GRAPH_SUCCESS;
}

}  // namespace optiling

namespace ge {

static graphStatus FagV4InferShape(gert::InferShapeContext* ctx)
{
    *ctx->GetOutputShape(0) = *ctx->GetInputShape(kQuery);
    *ctx->GetOutputShape(1) = *ctx->GetInputShape(kKey);
    *ctx->GetOutputShape(2) = *ctx->GetInputShape(kValue);
    gert::Shape* dpse = ctx->GetOutputShape(3);
    dpse->SetDimNum(1);
    dpse->SetDim(0, 0);  // dpse is always empty (V4: "dpse 暂未使用", semantics §9k)
    return GRAPH_SUCCESS;
}

static graphStatus FagV4InferDataType(gert::InferDataTypeContext* ctx)
{
    const DataType dt = ctx->GetInputDataType(kQuery);
    for (int i = 0; i < 4; ++i) {
        ctx->SetOutputDataType(i, dt);
    }
    return GRAPH_SUCCESS;
}

}  // namespace ge

namespace ops {

class AscendAttnFlashAttentionUnpaddingScoreGradV4 : public OpDef {
public:
    explicit AscendAttnFlashAttentionUnpaddingScoreGradV4(const char* name) : OpDef(name)
    {
        const std::vector<ge::DataType> floats = {ge::DT_FLOAT16, ge::DT_BF16, ge::DT_FLOAT};
        const std::vector<ge::DataType> fp32 = {ge::DT_FLOAT, ge::DT_FLOAT, ge::DT_FLOAT};
        const std::vector<ge::DataType> u8 = {ge::DT_UINT8, ge::DT_UINT8, ge::DT_UINT8};
        const std::vector<ge::DataType> mask = {ge::DT_BOOL, ge::DT_BOOL, ge::DT_BOOL};
        const std::vector<ge::DataType> i64 = {ge::DT_INT64, ge::DT_INT64, ge::DT_INT64};
        const std::vector<ge::Format> nd = {ge::FORMAT_ND, ge::FORMAT_ND, ge::FORMAT_ND};
        auto in = [&](const char* n, Option opt, const std::vector<ge::DataType>& t) -> OpParamDef& {
            return this->Input(n).ParamType(opt).DataType(t).Format(nd).UnknownShapeFormat(nd);
        };
        in("query", REQUIRED, floats);
        in("key", REQUIRED, floats);
        in("value", REQUIRED, floats);
        in("dy", REQUIRED, floats);
        in("pse_shift", OPTIONAL, floats);
        in("drop_mask", OPTIONAL, u8);
        in("padding_mask", OPTIONAL, floats);
        in("atten_mask", OPTIONAL, mask);  // bool; uint8 masks are reinterpreted by the aclnn layer
        in("softmax_max", REQUIRED, fp32);
        in("softmax_sum", REQUIRED, fp32);
        in("softmax_in", OPTIONAL, floats);
        in("attention_in", REQUIRED, floats);
        in("prefix", OPTIONAL, i64).ValueDepend(OPTIONAL);
        // optional in the IR like CANN's FAG (TND requires them: the tiling refuses their absence);
        // read on the host through their IR index (GetOptionalInputTensor)
        in("actual_seq_qlen", OPTIONAL, i64).ValueDepend(OPTIONAL);
        in("actual_seq_kvlen", OPTIONAL, i64).ValueDepend(OPTIONAL);
        in("q_start_idx", OPTIONAL, i64).ValueDepend(OPTIONAL);
        in("kv_start_idx", OPTIONAL, i64).ValueDepend(OPTIONAL);
        for (const char* o : {"dq", "dk", "dv", "dpse"}) {
            this->Output(o).ParamType(REQUIRED).DataType(floats).Format(nd).UnknownShapeFormat(nd);
        }
        this->Attr("scale_value").AttrType(OPTIONAL).Float(1.0f);
        this->Attr("keep_prob").AttrType(OPTIONAL).Float(1.0f);
        this->Attr("pre_tockens").AttrType(OPTIONAL).Int(2147483647);
        this->Attr("next_tockens").AttrType(OPTIONAL).Int(2147483647);
        this->Attr("head_num").AttrType(REQUIRED).Int();
        this->Attr("input_layout").AttrType(REQUIRED).String();  // "TND" only
        this->Attr("inner_precise").AttrType(OPTIONAL).Int(0);
        this->Attr("sparse_mode").AttrType(OPTIONAL).Int(0);
        this->Attr("pse_type").AttrType(OPTIONAL).Int(1);
        this->Attr("seed").AttrType(OPTIONAL).Int(0);
        this->Attr("offset").AttrType(OPTIONAL).Int(0);
        this->Attr("softmax_in_layout").AttrType(OPTIONAL).String("");

        this->SetInferShape(ge::FagV4InferShape).SetInferDataType(ge::FagV4InferDataType);
        this->AICore().SetTiling(optiling::FagV4TilingFunc);
        this->AICore().AddConfig("ascend910b");
    }
};

OP_ADD(AscendAttnFlashAttentionUnpaddingScoreGradV4);

}  // namespace ops

#endif  // ASCEND_ATTN_HOST_SIM
