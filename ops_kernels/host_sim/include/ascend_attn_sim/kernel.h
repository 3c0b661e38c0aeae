/*
 * ascend_attn host simulation of AscendC: kernel entry support, core ids and synchronisation.
 *
 * Blocks (AI cores) are emulated by running the kernel entry once per block index; the runner
 * chooses sequential execution (default) or one thread per block (needed by SyncAll). Pipe
 * barriers and event flags order the asynchronous pipes of one core on the device; the host runs
 * every instruction in program order, so they are no-ops here (write them as on the device).
 */
#ifndef ASCEND_ATTN_SIM_KERNEL_H
#define ASCEND_ATTN_SIM_KERNEL_H

#include "ascend_attn_sim/base.h"

// pipes (global enum on the device)
enum pipe_t : uint8_t { PIPE_S = 0, PIPE_V, PIPE_M, PIPE_MTE1, PIPE_MTE2, PIPE_MTE3, PIPE_ALL, PIPE_FIX, PIPE_V2, PIPE_MTE4, PIPE_MTE5 };

enum KernelMetaType : uint8_t {
    KERNEL_TYPE_AIV_ONLY,
    KERNEL_TYPE_AIC_ONLY,
    KERNEL_TYPE_MIX_AIV_1_0,
    KERNEL_TYPE_MIX_AIC_1_0,
    KERNEL_TYPE_MIX_AIC_1_1,
    KERNEL_TYPE_MIX_AIC_1_2,
    KERNEL_TYPE_AICORE,
    KERNEL_TYPE_VECTORCORE,
    KERNEL_TYPE_MIX_AICORE,
    KERNEL_TYPE_MIX_VECTOR_CORE,
};

// Kernel-type and tiling registration macros of the kernel side: nothing to do on the host.
#define KERNEL_TASK_TYPE_DEFAULT(type)
#define KERNEL_TASK_TYPE(key, type)
#define REGISTER_TILING_DEFAULT(type)
#define REGISTER_TILING_FOR_TILINGKEY(expr, type)

// Tiling struct copied out of the tiling GM buffer (checked like any GM read).
#define GET_TILING_DATA_WITH_STRUCT(Type, var, tilingPtr) \
    Type var;                                            \
    ::AscendC::sim::LoadTiling(&var, sizeof(Type), (tilingPtr))

#define TILING_KEY_IS(k) (::AscendC::sim::Core().tilingKey == static_cast<uint64_t>(k))

// Vector-only emulation: mixed kernels run their vector branch; Matmul calls are synchronous.
#define ASCEND_IS_AIV (true)
#define ASCEND_IS_AIC (false)
#define ASCEND_IS_NOT_AIV (false)
#define ASCEND_IS_NOT_AIC (true)

namespace AscendC {
namespace sim {
inline void LoadTiling(void* dst, size_t bytes, const void* src)
{
    if (src == nullptr) {
        Fail(kInvalidArgument, "GET_TILING_DATA_WITH_STRUCT: tiling GM address is null");
    }
    CheckGm(src, bytes, false, "GET_TILING_DATA_WITH_STRUCT");
    std::memcpy(dst, src, bytes);
}
}  // namespace sim

inline int64_t GetBlockIdx() { return sim::Core().blockIdx; }
inline int64_t GetBlockNum() { return sim::Core().blockNum; }
inline int64_t GetSubBlockIdx() { return 0; }
inline int64_t GetTaskRation() { return 1; }
inline GM_ADDR GetUserWorkspace(GM_ADDR workspace) { return workspace; }

template <pipe_t pipe>
inline void PipeBarrier()
{
}
inline void pipe_barrier(pipe_t) {}

template <HardEvent event>
inline void SetFlag(int32_t)
{
}
template <HardEvent event>
inline void WaitFlag(int32_t)
{
}

// All-core barrier. Needs the runner's threaded mode (sequential blocks cannot meet).
template <bool isAIVOnly = true>
inline void SyncAll()
{
    sim::SyncAllBlocks();
}

enum class CacheLine : uint8_t { SINGLE_CACHE_LINE = 0, ENTIRE_DATA_CACHE };
enum class DcciDst : uint8_t { CACHELINE_ALL = 0, CACHELINE_UB, CACHELINE_OUT, CACHELINE_ATOMIC };
template <typename T, CacheLine entire = CacheLine::SINGLE_CACHE_LINE, DcciDst dst = DcciDst::CACHELINE_OUT, typename G>
inline void DataCacheCleanAndInvalid(const G&)
{
}

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_KERNEL_H
