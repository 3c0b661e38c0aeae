/*
 * ascend_attn host simulation: tiling structs of AscendC high-level APIs (subset).
 *
 * TCubeTiling carries the Matmul tiling (CANN: produced on the host by matmul_tiling::
 * MatmulApiTiling::GetTiling). As in CANN, tiling structs written in standard C++ (not with
 * BEGIN_TILING_DATA_DEF) embed it as AscendC::tiling::TCubeTiling; the global name TCubeTiling
 * is an alias. Field names follow CANN; the emulated Matmul reads M/N/Ka/Kb,
 * singleCore*, base*, depthA1/B1, dbL0A/B/C, isBias, iterateOrder and checks the L1/L0 budgets
 * they imply. A host tiling function without CANN fills these fields itself.
 */
#ifndef ASCEND_ATTN_SIM_KERNEL_TILING_H
#define ASCEND_ATTN_SIM_KERNEL_TILING_H

#include <cstdint>

namespace AscendC {
namespace tiling {

struct TCubeTiling {
    int32_t usedCoreNum = 1;
    int32_t M = 0;
    int32_t N = 0;
    int32_t Ka = 0;
    int32_t Kb = 0;
    int32_t singleCoreM = 0;
    int32_t singleCoreN = 0;
    int32_t singleCoreK = 0;
    int32_t baseM = 0;
    int32_t baseN = 0;
    int32_t baseK = 0;
    int32_t depthA1 = 1;
    int32_t depthB1 = 1;
    int32_t stepM = 1;
    int32_t stepN = 1;
    int32_t isBias = 0;
    int32_t transLength = 0;
    int32_t iterateOrder = 0;  // 0: walk M first (ORDER_M), 1: walk N first (ORDER_N)
    int32_t shareMode = 0;
    int32_t shareL1Size = 0;
    int32_t shareL0CSize = 0;
    int32_t shareUbSize = 0;
    int32_t batchM = 1;
    int32_t batchN = 1;
    int32_t singleBatchM = 1;
    int32_t singleBatchN = 1;
    int32_t stepKa = 1;
    int32_t stepKb = 1;
    int32_t depthAL1CacheUB = 0;
    int32_t depthBL1CacheUB = 0;
    int32_t dbL0A = 2;
    int32_t dbL0B = 2;
    int32_t dbL0C = 1;
    int32_t reserved = 0;
};

}  // namespace tiling
}  // namespace AscendC

using TCubeTiling = AscendC::tiling::TCubeTiling;

#endif  // ASCEND_ATTN_SIM_KERNEL_TILING_H
