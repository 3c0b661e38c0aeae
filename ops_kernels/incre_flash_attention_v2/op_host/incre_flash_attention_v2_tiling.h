/*
 * IncreFlashAttentionV2 (ascend_attn, issue 5): tiling data and the pure tiling function.
 *
 * The tiling data is a plain struct shared by the host tiling function and the kernel (it is
 * copied byte for byte into the kernel's tiling buffer). The tiling function is plain C++: a
 * function of shapes, attributes, the core count and the UB size, with no CANN dependency, so
 * the host simulation (ops_kernels/host_sim) and the unit tests call it directly; the CANN
 * TilingFunc in incre_flash_attention_v2_def.cpp only adapts gert::TilingContext to it.
 *
 * Work split: one work item = (batch b, KV head g); its G = Nq / Nkv query heads are the rows of
 * one matrix product (GQA). Items are split over the cores in contiguous ranges (the first
 * `formerCoreNum` cores take `itemsPerCore`, the others one less). Per item the KV positions
 * [0, L_b) are streamed through UB in blocks of `kvBlock` positions; the last block of a batch
 * is a tail of L_b % kvBlock positions.
 *
 * Flash-decode split: when the B * Nkv items are fewer than 0.4 x the cores (float paths, KV of at least
 * two blocks and minSplitLen positions per split),
 * each item's positions are cut into splitNum chunks of splitChunk positions, one task per core; every
 * task writes its partial (unnormalised acc, row max, row sum) to the workspace, and after SyncAll a
 * combine step merges the partials of each item (m = max m_s, l = sum l_s e^(m_s - m), o = sum acc_s
 * e^(m_s - m) / l) and writes the output.
 *
 * Layouts: BSH and BSND (K/V row stride Nkv*D), BNSD (rows of one head contiguous, stride D); query
 * and output of S = 1 have the same memory order in all three. K/V as one tensor or as tensor lists
 * (one tensor per batch of its own S_b; the kernel reads addresses and shapes from the list descriptors).
 *
 * Scope: BSH / BSND / BNSD layouts, contiguous or tensor-list KV, actual_seq_lengths, GQA; float path (§7.3, fp16 / bf16 query),
 * scenario C (fp16 / bf16 in, int8 out, per-tensor / per-channel float32 quant2), full-int8
 * scenarios A and B (§7.5), atten_mask (per batch or per query head; fully masked rows give 0 /
 * quant2(0)). Everything else (pse, paged KV, antiquant, left padding, bf16 quant scales) is refused
 * with an error status (CANN's IncreFlashAttentionV4 runs those).
 */
#ifndef ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_H
#define ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_H

#include <cstdint>

#include "../op_kernel/incre_flash_attention_v2_tiling_data.h"

namespace ascend_attn {
namespace ifa {

// Data types the tiling understands (ge::DataType values are mapped onto these by the adapter).
enum DType : uint32_t { kFloat16 = 0, kInt8 = 1, kFloat32 = 2, kInt64 = 3, kUint64 = 4, kBFloat16 = 5, kOther = 99 };

struct IfaTilingInput {
    uint32_t batch = 0;
    uint32_t headsQ = 0;          // num_heads
    uint32_t headsKv = 0;         // num_key_value_heads (0 -> headsQ)
    uint32_t hidden = 0;          // last dim of the BSH query (Nq * D)
    uint32_t hiddenKv = 0;        // last dim of the BSH key / value (Nkv * D)
    uint32_t seqQ = 1;            // query S (must be 1)
    uint32_t seqKv = 0;           // key / value S (tensor lists: the largest S_b)
    uint32_t keyBatch = 0;        // batch of key / value
    DType queryType = kFloat16;
    DType kvType = kFloat16;
    DType outType = kFloat16;
    const char* layout = "BSH";
    float scaleValue = 1.0f;
    uint32_t seqLenCount = 0;     // elements of actual_seq_lengths (0 = absent)
    bool hasMask = false, hasPse = false, hasAntiquant = false, hasBlockTable = false, hasKvPadding = false;
    bool kvIsList = false;        // one K/V tensor per batch
    bool kvAsDescriptor = false;  // key / value GM addresses are ListTensorDesc blocks (CANN: DYNAMIC inputs)
    uint32_t maskDimNum = 0;      // atten_mask rank (hasMask): (B,Sm) (B,1,Sm) (B,1,1,Sm) (B,Nq,1,Sm) (1,Nq,1,Sm)
    uint64_t maskDims[4] = {0, 0, 0, 0};
    bool hasDequant1 = false, hasQuant1 = false, hasDequant2 = false;
    bool hasQuant2 = false, hasQuantOffset2 = false;
    uint32_t quant2Elems = 0;     // elements of quant_scale2 (1 or Nq*D)
    uint32_t quantOffset2Elems = 0;
    DType dequantType = kFloat32; // dtype of dequant_scale1/2
    DType quant2Type = kFloat32;  // dtype of quant_scale2 / quant_offset2
    // hardware
    uint32_t coreNum = 0;         // AI cores available
    uint64_t ubSize = 0;          // UB bytes per core
    uint64_t l0aSize = 64 * 1024, l0bSize = 64 * 1024, l0cSize = 128 * 1024;
    uint32_t maxKvBlock = 512;    // upper bound of the KV block (tests lower it to force loops)
    uint32_t maxSplit = 16;       // upper bound of the flash-decode split (1 = never split)
    uint32_t minSplitLen = 512;   // fewest KV positions per split (CANN's empirical value; tests lower it)
};

// Status of the tiling function: 0 = OK, else an error; `err` receives a message.
enum TilingStatus : int { kTilingOk = 0, kTilingUnsupported = 1, kTilingInvalid = 2, kTilingNoFit = 3 };

// UB bytes the kernel allocates for a given tiling (kept next to the kernel's InitBuffer calls).
uint64_t IfaUbBytes(uint32_t mode, uint32_t groupSize, uint32_t headDim, uint32_t kvBlock, bool perChannel,
                    bool hasMask = false, bool split = false);

int IncreFlashAttentionV2Tiling(const IfaTilingInput& in, IncreFlashAttentionV2TilingData& out, char* err,
                                uint32_t errLen);

}  // namespace ifa
}  // namespace ascend_attn

#endif  // ASCEND_ATTN_INCRE_FLASH_ATTENTION_V2_TILING_H
