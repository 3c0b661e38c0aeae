/*
 * IncreFlashAttentionV2 tiling data: a plain struct shared by the host tiling
 * (op_host/incre_flash_attention_v2_tiling.cpp, which documents the fields' meaning) and the kernel
 * (GET_TILING_DATA_WITH_STRUCT). It lives next to the kernel because CANN's kernel build only sees
 * op_kernel/. No implicit padding: the runner, the device and ctypes agree on the layout.
 */
#ifndef ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_DATA_H
#define ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_DATA_H

#include <cstdint>

namespace ascend_attn {
namespace ifa {

// Dataflow of the kernel (tiling key = mode + 4 for bf16 q/k/v).
enum Mode : uint32_t {
    kModeFloat = 0,     // fp16 / bf16 q/k/v -> same dtype out (§7.3)
    kModeQuantOut = 1,  // scenario C: fp16 / bf16 q/k/v -> int8 out (§7.3 + §7.6)
    kModeInt8Fp16 = 2,  // scenario B: int8 q/k/v -> fp16 out (§7.5)
    kModeInt8Int8 = 3,  // scenario A: int8 q/k/v -> int8 out (§7.5 + §7.6)
};

// Matrix-product shape handed to the kernel's Matmul objects (filled into TCubeTiling there).
struct IfaMatmulShape {
    uint32_t M;      // rows of A and C (= G)
    uint32_t N;      // columns of C (positions for mm1, D for mm2): the largest; blocks use SetSingleShape
    uint32_t Ka;     // reduction length (D for mm1, kvBlock for mm2)
    uint32_t Kb;
    uint32_t baseM;  // L0 block sizes (multiples of 16)
    uint32_t baseN;
    uint32_t baseK;
    uint32_t pad;
};

struct IncreFlashAttentionV2TilingData {
    // ---- problem -------------------------------------------------------------------------------
    uint32_t batch;
    uint32_t headsQ;        // Nq
    uint32_t headsKv;       // Nkv
    uint32_t groupSize;     // G = Nq / Nkv
    uint32_t headDim;       // D
    uint32_t seqKv;         // S of key / value (positions stored per batch)
    uint32_t seqLenCount;   // elements of actual_seq_lengths (0: none -> L_b = S; 1: broadcast)
    uint32_t mode;          // Mode
    uint32_t quantPerChannel;  // quant_scale2 has Nq*D elements (else one)
    uint32_t hasQuantOffset;   // quant_offset2 given
    uint32_t deqIsFloat;       // dequant_scale1/2 are float32 values (else uint64/int64 words)
    float scaleValue;
    uint32_t inputBf16;        // float path with bfloat16 q/k/v (P and output rounded RNE)
    uint32_t tilingKey;        // mode + 4 * inputBf16
    // ---- multi-core split of the batch * Nkv work items -----------------------------------------
    uint32_t usedCoreNum;
    uint32_t itemsPerCore;   // items of the first formerCoreNum cores; the others take one less
    uint32_t formerCoreNum;
    // ---- KV loop -------------------------------------------------------------------------------
    uint32_t kvBlock;        // positions per UB loop (multiple of 32)
    uint32_t seqKvAlign;     // seqKv rounded up to kvBlock: score row stride of the int8 workspace
    uint32_t ubBytes;        // UB bytes the kernel's InitBuffer calls take (<= UB size)
    // ---- atten_mask (bool/int8/uint8, nonzero = masked): row of (b, query head h) starts at
    //      b * maskBatchStride + h * maskHeadStride; position s at + s
    uint32_t hasMask;
    uint32_t maskReserved;
    uint64_t maskBatchStride;
    uint64_t maskHeadStride;
    // ---- K/V layout and form ----------------------------------------------------------------------
    uint32_t kvBnsd;         // K/V rows of one head contiguous (BNSD, row stride D); else BSH / BSND (stride Nkv*D)
    uint32_t kvList;         // key / value are tensor lists (one tensor per batch, its own S); the kernel
                             // reads the per-batch addresses and S_b from the list descriptors
    uint32_t kvDesc;         // key / value addresses are list descriptors (always with kvList; CANN: DYNAMIC
                             // inputs, one (B, S, ...) tensor is a list of one)
    uint32_t reserved0;
    // ---- flash-decode split: one item's KV range over splitNum cores, then a combine step ------------
    uint32_t splitNum;       // 1: no split; > 1: tasks = items * splitNum, one per core (float paths only)
    uint32_t splitChunk;     // positions per split (multiple of kvBlock)
    uint64_t wsSplitOffset;  // partials (acc G x D fp32, max G, sum G) of every task, after the per-core regions
    uint64_t wsSplitBytes;   // bytes per task
    // ---- workspace (bytes, after the system workspace), per core ---------------------------------
    uint64_t wsScoreOffset;  // mm1 results: G x kvBlock float (float path) / G x seqKvAlign half (int8)
    uint64_t wsProbOffset;   // P: G x kvBlock half (float path) / int8 (int8 path)
    uint64_t wsMm2Offset;    // mm2 results: G x D float (float path) / int32 (int8 path)
    uint64_t wsPerCore;
    uint64_t workspaceSize;  // usedCoreNum * wsPerCore (user workspace; the system part is extra)
    IfaMatmulShape mm1;      // Q (G x D) . K^T (D x n)
    IfaMatmulShape mm2;      // P (G x n) . V (n x D)
};

static_assert(sizeof(IncreFlashAttentionV2TilingData) == 248, "no implicit padding: keep the runner in step");

}  // namespace ifa
}  // namespace ascend_attn

#endif  // ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_DATA_H
