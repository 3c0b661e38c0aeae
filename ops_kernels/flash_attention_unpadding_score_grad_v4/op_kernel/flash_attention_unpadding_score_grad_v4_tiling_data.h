/*
 * FlashAttentionUnpaddingScoreGradV4 tiling data: a plain C++ struct (CANN "standard C++ tiling
 * struct", REGISTER_TILING_DEFAULT in the kernel) shared by the host tiling
 * (op_host/flash_attention_unpadding_score_grad_v4_tiling.cpp), the kernel and the host-simulation
 * runner. It lives next to the kernel because CANN's kernel build only sees op_kernel/.
 *
 * Work decomposition (one "unit" = one query block of one query head of one sequence):
 *   units: for b in [0,B) with S1_b > 0, h in [0,N1), i in [0, ceil(S1_b / s1Block))
 *   core c processes units [unitStart[c], unitStart[c+1]) (contiguous, balanced by the number
 *   of (query row, key column) score elements that the sparse mode keeps).
 * Per unit the kernel loops over key blocks of s2Block columns (only those the causal rule can
 * keep), and per key block over vector chunks of vecRows query rows (UB loops).
 * dq/dk/dv are accumulated in fp32 in the workspace (atomic add, summed over key blocks, GQA
 * group members and query blocks), then scaled and cast by the post phase.
 */
#ifndef FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_DATA_H
#define FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_DATA_H

#include <cstdint>

#include "kernel_tiling/kernel_tiling.h"  // AscendC::tiling::TCubeTiling

namespace fag_v4 {

constexpr uint32_t kMaxCores = 64;   // ascend910b: at most 48 vector cores; room to spare
constexpr uint32_t kMaxBatch = 2048; // semantics §10: B <= 2048

// Key of the kernel variant (dtype of query/key/value/dy/attention_in and of dq/dk/dv).
enum TilingKey : uint64_t { kKeyFp16 = 0, kKeyBf16 = 1, kKeyFp32 = 2 };

// Index rule the kernel applies (derived from sparse_mode and the presence of atten_mask; the
// compressed masks of modes 2-4, 7, 8 are never read). Kept key columns of local query row i form
// one interval [start, end) (semantics.md §4, d = j - i, delta = S2_b - S1_b):
enum MaskKind : uint32_t {
    kMaskNone = 0,           // no atten_mask: every (i, j) kept (full attention for any sparse_mode)
    kMaskLeftUp = 1,         // mode 2: d <= 0
    kMaskRightDown = 2,      // mode 3: d <= delta
    kMaskBand = 3,           // mode 4: delta - pre <= d <= delta + next
    kMaskRightDownBand = 4,  // mode 7: last non-empty sequence d <= delta + next, others d <= delta
    kMaskBandLeftUp = 5,     // mode 8: first non-empty sequence d <= S2 - max(S1 - next, 0), others d <= 0
    kMaskPrefix = 6,         // mode 6: d <= delta or j < prefix[b] (the kernel reads the prefix input)
    kMaskFull = 7,           // mode 1 with a full mask: every column in range, mask tiles read (Select)
    kMaskFullBand = 8,       // mode 0 with a full mask: -pre <= d <= next (origin top-left) and mask tiles
};

// pse form (semantics.md §5), one tiling branch each; types 0/1 use the external forms, 2/3 the slopes.
enum PseForm : uint32_t {
    kPseNone = 0,
    kPseFull = 1,    // 1-D N1*sum(S1_b*S2_b): per-sequence [N1, S1_b, S2_b] blocks (input dtype)
    kPseRow = 2,     // 1-D N1*sum(S2_b): per-sequence [N1, 1, S2_b] rows broadcast over the query rows
    kPseAlibi = 3,   // [B|1, N1, 1024, sRef]: last 1024 rows of a Toeplitz pse (element on the same diagonal)
    kPseSlopes = 4,  // fp32 slopes [N1] or [B, N1]: -slope * |j + kv_start - i - q_start| (sqrt for type 3)
};

struct FagV4TilingData {
    // ---- problem ---------------------------------------------------------------------------------
    int64_t t1;          // query rows (incl. tail rows beyond the last cumulative length)
    int64_t t2;          // key/value rows
    uint32_t n1;         // query heads
    uint32_t n2;         // key/value heads
    uint32_t g;          // n1 / n2
    uint32_t d;          // head dim
    uint32_t batch;      // entries of actual_seq_qlen / actual_seq_kvlen
    uint32_t maskKind;   // MaskKind
    uint32_t softmaxTnd; // 1: softmax_in_layout "same_as_input" (TND), 0: "" (per-sequence NTD)
    float scale;         // scale_value
    int64_t preTokens;   // pre_tokens (mode 4)
    int64_t nextTokens;  // next_tokens (modes 4, 7, 8)
    uint32_t bandFirst;  // first sequence with S1_b > 0 (mode 8)
    uint32_t bandLast;   // last sequence with S1_b > 0 (mode 7)

    // ---- feature branches -----------------------------------------------------------------------------
    uint32_t maskLocal;       // full masks: 1 = [maxS1, maxS2] indexed (i, j), 0 = [T1, T2] indexed (oq+i, ok+j)
    uint32_t pseForm;         // PseForm
    uint32_t pseType;         // pse_type 0..3 (1: (S + pse) * scale, else S * scale + pse)
    uint32_t pseSlopesPerBatch;  // slopes [B, N1] (1) or [N1] (0)
    uint32_t hasDrop;         // drop_mask given: dP and P scaled by bit / keep_prob
    uint32_t deterministic;   // 1: dk/dv by a second, kv-major pass without cross-core atomics
    int64_t maskCols;         // row stride (elements) of the full mask
    int64_t pseSRef;          // alibi: columns of the compressed pse (max S2_b)
    int64_t pseBatchStride;   // alibi: elements between batch entries (0: one entry broadcast)
    int64_t qStart;           // q_start_idx[0] (slopes)
    int64_t kvStart;          // kv_start_idx[0] (slopes)
    float keepScale;          // 1 / keep_prob (fp32), applied to the kept dP and P
    uint32_t reserved1;

    // ---- blocks ------------------------------------------------------------------------------------
    uint32_t s1Block;    // query rows per unit (cube M)
    uint32_t s2Block;    // key columns per tile (cube N)
    uint32_t s2Stride;   // row stride (elements) of the score tiles in the workspace: align(s2Block, 16)
    uint32_t vecRows;    // query rows per vector chunk (UB loop inside a tile)
    uint32_t dAlignIn;   // d rounded up to 32 bytes of the input dtype (UB row stride of q/dy/out rows)
    uint32_t dAlignF;    // d rounded up to 32 bytes of fp32
    uint32_t postRows;   // (row, head) vectors of d elements per pre/post UB loop

    // ---- cores -------------------------------------------------------------------------------------
    uint32_t usedCoreNum;           // block dim of the launch
    uint32_t reserved0;
    uint64_t totalUnits;
    uint64_t unitStart[kMaxCores + 1];
    // deterministic pass: units (b, kv head g, key block of s2Block columns), contiguous per core
    uint64_t totalKvUnits;
    uint64_t kvUnitStart[kMaxCores + 1];

    // ---- workspace (bytes, relative to the user workspace) ----------------------------------------
    uint64_t wsDqOffset;      // fp32 [t1, n1, d]
    uint64_t wsDkOffset;      // fp32 [t2, n2, d]
    uint64_t wsDvOffset;      // fp32 [t2, n2, d]
    uint64_t wsCoreOffset;    // per-core scratch base
    uint64_t wsCoreBytes;     // per-core scratch: S, dP fp32 and P, dS (input dtype), each [s1Block, s2Stride]
    uint64_t wsSizeUser;      // total user workspace bytes

    uint64_t ubPlannedBytes;  // UB the main phase allocates (for reports)

    // ---- cube tilings (Matmul high-level API) -----------------------------------------------------
    AscendC::tiling::TCubeTiling mmScore;  // [s1, d] x [s2, d]^T -> [s1, s2]: Q K^T and dO V^T
    AscendC::tiling::TCubeTiling mmDq;     // [s1, s2] x [s2, d]   -> [s1, d]:  dS K
    AscendC::tiling::TCubeTiling mmDkv;    // [s1, s2]^T x [s1, d] -> [s2, d]:  dS^T Q and P^T dO
};

}  // namespace fag_v4

#endif  // FLASH_ATTENTION_UNPADDING_SCORE_GRAD_V4_TILING_DATA_H
