/*
 * RingAttentionUpdate tiling data: a plain struct shared by the host tiling
 * (op_host/ring_attention_update_tiling.cpp) and the kernel (GET_TILING_DATA_WITH_STRUCT).
 * It lives next to the kernel because CANN's kernel build only sees op_kernel/; op_host includes it
 * through op_host/ring_attention_update_tiling.h. All fields are int64_t so that the host runner,
 * the device and ctypes agree on the layout without padding rules.
 */
#ifndef ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_DATA_H
#define ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_DATA_H

struct RingAttentionUpdateTilingData {
    int64_t layoutMode;        // 0: SBH; 1: TND with TND statistics; 2: TND with NTD statistics
    int64_t attnDtype;         // 0: float16, 1: bfloat16, 2: float32 (also the tiling key)
    int64_t batch;             // SBH: B; TND + NTD statistics: sequences (len(actual_seq_qlen) - 1); else 0
    int64_t seqLen;            // SBH: S; TND: T
    int64_t headNum;           // N
    int64_t headDim;           // D
    int64_t totalRows;         // statistics rows (8 fp32 lanes each): S*B*N or T*N
    int64_t usedCoreNum;       // blockDim
    int64_t coreRowsBase;      // every core gets coreRowsBase rows ...
    int64_t coreRowsRemainder; // ... and the first coreRowsRemainder cores one row more
    int64_t rowsPerLoop;       // statistics rows per UB iteration
    int64_t colsPerLoop;       // head-dim elements per UB iteration (== headDim unless D is split)
    int64_t colsPerLoopAlign;  // colsPerLoop rounded up to 32 bytes of the attention dtype
    int64_t colLoops;          // ceil(headDim / colsPerLoop)
    int64_t colTail;           // elements of the last column chunk
    int64_t ubBytes;           // UB the kernel's TPipe allocates per core
};

#endif  // ASCEND_ATTN_RING_ATTENTION_UPDATE_TILING_DATA_H
