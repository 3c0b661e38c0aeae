/*
 * FlashAttentionUnpaddingScoreGradV4 (TND) — the pure host tiling function.
 *
 * ComputeFagV4Tiling is plain C++ (no CANN types): a function of the shapes, the sequence
 * lengths, the attributes, the number of vector cores and the UB size. The CANN TilingFunc
 * (flash_attention_unpadding_score_grad_v4_def.cpp) and the host-simulation runner
 * (host_sim/runners/flash_attention_unpadding_score_grad_v4_runner.cpp) both call it.
 * The tiling data struct and the work decomposition: ../op_kernel/..._tiling_data.h.
 */
#ifndef FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_H
#define FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_H

#include <cstdint>

#include "../op_kernel/flash_attention_unpadding_score_grad_v4_tiling_data.h"

namespace fag_v4 {

// Everything the tiling function needs, free of CANN types.
struct FagV4TilingInput {
    int64_t t1 = 0, t2 = 0;
    int64_t n1 = 0, n2 = 0, d = 0;
    uint32_t dtypeBytes = 2;       // 2 (fp16/bf16) or 4 (fp32)
    bool bf16 = false;
    const int64_t* cumQ = nullptr;   // actual_seq_qlen (cumulative, no leading 0), batch entries
    const int64_t* cumKv = nullptr;  // actual_seq_kvlen
    uint32_t batch = 0;
    int64_t sparseMode = 0;
    int64_t preTokens = 2147483647;
    int64_t nextTokens = 2147483647;
    const int64_t* prefix = nullptr;  // sparse_mode 6: prefix[b], batch entries
    bool hasAttenMask = false;
    uint32_t maskForm = 0;           // with a mask in sparse_mode 0 / 1: 1 local [maxS1, maxS2], 2 global [T1, T2]
    int64_t maskCols = 0;            // columns of the full mask tensor
    bool hasPse = false;
    uint32_t pseForm = 0;            // PseForm of the pse input (the validation's classification)
    int64_t pseType = 1;
    int64_t pseBatch = 1;            // alibi: B or 1 entries; slopes: B ([B, N1]) or 1 ([N1])
    int64_t pseSRef = 0;             // alibi: last dim of the compressed pse
    int64_t qStartIdx = 0, kvStartIdx = 0;
    bool hasDropMask = false;
    float keepProb = 1.0f;
    bool deterministic = false;      // dk / dv without cross-core atomic accumulation
    bool softmaxTnd = false;
    float scale = 1.0f;
    // platform
    uint32_t coreNum = 48;           // vector cores
    uint64_t ubSize = 192 * 1024;    // bytes of UB the kernel may use
    // optional overrides (0 = choose): tests use them to force tails and UB loops
    uint32_t s1BlockHint = 0;
    uint32_t s2BlockHint = 0;
    uint32_t vecRowsHint = 0;        // forcing it skips the UB fit check (the kernel then fails)
};

struct FagV4TilingResult {
    int status = 0;             // 0 ok, otherwise the input is not supported / invalid
    const char* message = "";   // static string describing the refusal
    uint64_t tilingKey = 0;
    uint32_t blockDim = 1;
    uint64_t workspaceUser = 0; // bytes of user workspace (without the library's system part)
};

// Fill `tiling` for `in`. Pure and deterministic.
FagV4TilingResult ComputeFagV4Tiling(const FagV4TilingInput& in, FagV4TilingData& tiling);

// Kept key columns [start, end) of local query row r of sequence b (clamped to [0, s2]; end == start
// when the row keeps nothing); prefixB = prefix[b] (mode 6 only). The kernel applies the same rule.
void FagV4RowRange(const FagV4TilingData& t, uint32_t b, int64_t r, int64_t s1, int64_t s2, int64_t prefixB,
                   int64_t& start, int64_t& end);

// UB bytes the main phase allocates for a given plan (used by the tiling and the tests); featureBytes =
// FagV4FeatureUbBytes of the feature branches.
uint64_t FagV4MainUbBytes(uint32_t s1Block, uint32_t s2Stride, uint32_t vecRows, uint32_t dAlignIn,
                          uint32_t dAlignF, uint32_t dtypeBytes, uint64_t featureBytes = 0);
// UB bytes of the per-row buffers of the mask / pse / dropout branches (one score row of s2Stride).
uint64_t FagV4FeatureUbBytes(const FagV4TilingData& t, uint32_t s2Stride, uint32_t dtypeBytes);
// UB bytes the pre/post phases allocate for postRows vectors of d elements.
uint64_t FagV4PostUbBytes(uint32_t postRows, uint32_t d, uint32_t dtypeBytes);

}  // namespace fag_v4

#endif  // FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_H
