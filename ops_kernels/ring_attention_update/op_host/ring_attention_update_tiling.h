/*
 * RingAttentionUpdate host tiling: the tiling struct and the pure tiling function.
 *
 * ComputeRingAttentionUpdateTiling is plain C++ (no CANN headers): a function of the tensor
 * shapes, the attention dtype, the two layout attributes, the number of vector cores and the UB
 * size. The CANN TilingFunc (ring_attention_update_def.cpp) and the host-simulation runner
 * (host_sim/runners/ring_attention_update_runner.cpp) both call it, so the kernel is verified
 * on the host with exactly the tiling the device would get.
 */
#ifndef ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_H
#define ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_H

#include <cstdint>
#include <string>

#include "../op_kernel/ring_attention_update_tiling_data.h"

namespace ascend_attn {
namespace rau {

enum AttnDtype : int64_t { kFloat16 = 0, kBFloat16 = 1, kFloat32 = 2 };
enum LayoutMode : int64_t { kSbh = 0, kTndTnd = 1, kTndNtd = 2 };

// Bytes of UB one statistics row needs across all kernel buffers (double-buffered inputs
// prev/cur max/sum, outputs max/sum, the two lane weights), and per aligned attention column.
constexpr int64_t kStatRowBytes = 2 * 4 * 32 + 2 * 2 * 32 + 2 * 32;
constexpr int64_t kMaxRowsPerLoop = 4095;  // DataCopyPad blockCount limit

struct RingAttentionUpdateShapeInfo {
    int64_t attnDtype = kFloat16;
    int64_t attnDimNum = 0;
    int64_t attnShape[3] = {0, 0, 0};   // SBH: [S, B, H]; TND: [T, N, D]
    int64_t statsDimNum = 0;
    int64_t statsShape[4] = {0, 0, 0, 0};  // SBH: [B, N, S, 8]; TND: [T, N, 8]
    const char* inputLayout = "SBH";    // "SBH" | "TND"
    const char* softmaxLayout = "";     // "" | "SBH" | "TND"
    int64_t actualSeqQlenNum = -1;      // elements of actual_seq_qlen, -1 when absent
    int64_t coreNum = 1;                // vector cores available
    int64_t ubSize = 192 * 1024;        // UB bytes per vector core
};

inline int64_t RingAttentionUpdateDtypeSize(int64_t dtype) { return dtype == kFloat32 ? 4 : 2; }

// UB bytes per aligned attention column of one row: double-buffered prev+cur input tiles and the
// output tile in the attention dtype, plus two fp32 work tiles for 16-bit dtypes.
inline int64_t RingAttentionUpdateColBytes(int64_t dtypeSize)
{
    return 2 * 2 * dtypeSize + 2 * dtypeSize + (dtypeSize < 4 ? 2 * 4 : 0);
}

// UB bytes the kernel allocates for a tile of `rows` x `colsAlign`.
inline int64_t RingAttentionUpdateUbBytes(int64_t rows, int64_t colsAlign, int64_t dtypeSize)
{
    return rows * (kStatRowBytes + colsAlign * RingAttentionUpdateColBytes(dtypeSize));
}

// Fills `tiling`; on failure returns false and explains in `error`.
bool ComputeRingAttentionUpdateTiling(const RingAttentionUpdateShapeInfo& info, RingAttentionUpdateTilingData& tiling,
                                      std::string& error);

}  // namespace rau
}  // namespace ascend_attn

#endif  // ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_H
