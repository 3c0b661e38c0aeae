/*
 * Per-chip limits of the emulation, restated (not copied) from what CANN's CPU-debug tool states for
 * Ascend 910B (hicann/asc-tools cpudebug/src/api_check: the ascend910B1 platform parameters and the
 * kernel_*_check sources), and the names of the rules the emulation enforces. A violation fails with
 * "[rule NAME]" in its message (sim::FailRule), so a kernel's test names the rule it broke.
 */
#ifndef ASCEND_ATTN_SIM_CHIP_LIMITS_H
#define ASCEND_ATTN_SIM_CHIP_LIMITS_H

#include <cstdint>

namespace AscendC {
namespace sim {

struct ChipLimits {
    const char* name;
    uint64_t ub, l1, l0a, l0b, l0c, biasTable, fixpipe;  // bytes per core
    uint32_t blockBytes;      // DataBlock: address / length granularity of UB operands
    uint32_t repeatBytes;     // one vector repeat
    uint32_t blocksPerRepeat;
    uint32_t maxRepeat;       // repeatTimes of a level-0 vector instruction (8-bit field)
    uint32_t ubBankBytes, ubBanks;
    uint32_t cubeM, cubeN, cubeK;  // fp16 fractal of one cube instruction
};

// Ascend 910B: UB 192 KiB, L1 512 KiB, L0A/L0B 64 KiB, L0C 128 KiB, BT 1 KiB, FB 2 KiB, 32-byte blocks,
// 256-byte repeats of 8 blocks, repeat <= 255, UB in 64 banks of 4 KiB, cube 16x16x16.
constexpr ChipLimits kAscend910B{"ascend910b", 196608, 524288, 65536, 65536, 131072, 1024, 2048,
                                 32, 256, 8, 255, 4096, 64, 16, 16, 16};

// Rule names (the checks of the CPU-debug tool they correspond to in brackets).
namespace rule {
constexpr const char* kBufferSize = "BUFFER_SIZE";          // UB / L1 / L0 allocation within the chip size (buffer size overflow)
constexpr const char* kAddrAlign = "ADDR_ALIGN_32B";        // UB operand address 32-byte aligned (tensor address alignment)
constexpr const char* kCopyLength = "DATACOPY_LEN_32B";     // DataCopy length a whole number of 32-byte blocks
constexpr const char* kPosition = "TENSOR_POSITION";        // operand in a position the API accepts (tensor scope)
constexpr const char* kMaskRange = "MASK_RANGE";            // level-0 mask within the repeat, never all zero (mask checks)
constexpr const char* kRepeat = "REPEAT_TIMES_MAX";         // repeatTimes <= 255
constexpr const char* kTensorSize = "TENSOR_SIZE_OVERFLOW";  // an operand's extent inside its tensor (tensor size overflow)
constexpr const char* kCopyPad = "DATACOPYPAD_PARAMS";      // DataCopyPad blockCount / blockLen / padding ranges
constexpr const char* kCountAlign = "COUNT_ALIGN";          // Compare / CompareScalar counts in whole repeats / blocks
}  // namespace rule

}  // namespace sim
}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_CHIP_LIMITS_H
