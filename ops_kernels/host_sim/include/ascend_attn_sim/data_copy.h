/*
 * ascend_attn host simulation of AscendC: DataCopy and DataCopyPad.
 *
 * DataCopy (CANN doc "DataCopy"): moves whole 32-byte DataBlocks. The length (count * sizeof(T))
 * and the local address must be multiples of 32 bytes; with DataCopyParams, blockLen and both
 * strides are in DataBlocks on both sides. Violations throw kAlignment.
 *
 * DataCopyPad (CANN doc "DataCopyPad(ISASI)"): non-aligned moves of blockCount blocks of
 * blockLen bytes. GM side: strides in bytes (gap between the end of a block and the start of the
 * next). Local side: every block starts 32-byte aligned and occupies AlignUp(padded length, 32)
 * bytes, strides in DataBlocks. GM -> local: leftPadding/rightPadding elements get paddingValue
 * when isPad; every other byte of the block's 32-byte tail is unspecified (poisoned 0xFF here).
 * Local -> GM writes exactly blockLen bytes per block.
 *
 * With SetAtomicAdd<T>() active, stores into GM add instead of overwrite.
 */
#ifndef ASCEND_ATTN_SIM_DATA_COPY_H
#define ASCEND_ATTN_SIM_DATA_COPY_H

#include <mutex>

#include "ascend_attn_sim/pipe.h"

namespace AscendC {

struct DataCopyParams {
    DataCopyParams() = default;
    DataCopyParams(uint16_t count, uint16_t len, uint16_t srcStrideIn, uint16_t dstStrideIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn)
    {
    }
    uint16_t blockCount = 1;
    uint16_t blockLen = 0;
    uint16_t srcStride = 0;
    uint16_t dstStride = 0;
};

struct DataCopyExtParams {
    DataCopyExtParams() = default;
    DataCopyExtParams(uint16_t count, uint32_t len, uint32_t srcStrideIn, uint32_t dstStrideIn, uint32_t rsvIn)
        : blockCount(count), blockLen(len), srcStride(srcStrideIn), dstStride(dstStrideIn), rsv(rsvIn)
    {
    }
    uint16_t blockCount = 1;
    uint32_t blockLen = 0;
    uint32_t srcStride = 0;
    uint32_t dstStride = 0;
    uint32_t rsv = 0;
};

struct DataCopyPadParams {
    DataCopyPadParams() = default;
    DataCopyPadParams(bool isPadIn, uint8_t left, uint8_t right, uint64_t value)
        : isPad(isPadIn), leftPadding(left), rightPadding(right), paddingValue(value)
    {
    }
    bool isPad = false;
    uint8_t leftPadding = 0;
    uint8_t rightPadding = 0;
    uint64_t paddingValue = 0;
};

template <typename T>
struct DataCopyPadExtParams {
    DataCopyPadExtParams() = default;
    DataCopyPadExtParams(bool isPadIn, uint8_t left, uint8_t right, T value)
        : isPad(isPadIn), leftPadding(left), rightPadding(right), paddingValue(value)
    {
    }
    bool isPad = false;
    uint8_t leftPadding = 0;
    uint8_t rightPadding = 0;
    T paddingValue = T();
};

namespace sim {

constexpr uint32_t kMaxBlockCount = 4095;         // DataCopyPad blockCount range [1, 4095]
constexpr uint32_t kMaxPadBlockLen = 2097151;     // DataCopyExtParams::blockLen range [1, 2^21 - 1] bytes

template <typename T>
inline void CheckLocalAligned(const LocalTensor<T>& t, const char* api, const char* role)
{
    t.Live(api);
    if (t.SimAddr() % ONE_BLK_SIZE != 0) {
        FailRule(kAlignment, rule::kAddrAlign, Str(api, ": ", role, " local address ", t.SimAddr(), " is not 32-byte aligned"));
    }
}

template <typename T>
inline void CheckLocalIs(const LocalTensor<T>& t, const char* api, const char* role, bool ubOnly)
{
    const int mem = t.SimSlot() ? t.SimSlot()->mem : kUB;
    if (mem != kUB && (ubOnly || mem != kL1)) {
        FailRule(kUnsupported, rule::kPosition, Str(api, ": ", role, " tensor in ", PositionName(t.GetPosition()),
                               " is not a supported data path (", ubOnly ? "UB" : "UB or L1", ")"));
    }
}

template <typename T>
inline void StoreGm(T* dst, const T* src, uint64_t n)
{
    const int mode = Core().atomicMode;
    if (mode == 0) {
        std::memcpy(dst, src, n * sizeof(T));
        return;
    }
    AtomicWriteLock(true);
    for (uint64_t i = 0; i < n; ++i) {
        if constexpr (std::is_integral_v<T>) {
            const int64_t a = dst[i];
            const int64_t b = src[i];
            dst[i] = static_cast<T>(mode == 1 ? a + b : (mode == 2 ? (a > b ? a : b) : (a < b ? a : b)));
        } else {
            // fp32 arithmetic rounded once to T (exact for float; correctly rounded for half/bf16)
            const float a = static_cast<float>(dst[i]);
            const float b = static_cast<float>(src[i]);
            const float r = mode == 1 ? a + b : (mode == 2 ? (a > b ? a : b) : (a < b ? a : b));
            dst[i] = static_cast<T>(r);
        }
    }
    AtomicWriteLock(false);
}

template <typename T>
inline void FillPoison(T* p, uint64_t bytes)
{
    if (Core().cfg->poison) {
        std::memset(reinterpret_cast<uint8_t*>(p), 0xFF, bytes);
    }
}

// Shared GM -> local DataCopyPad implementation (blockLen in bytes).
template <typename T>
inline void PadIn(const LocalTensor<T>& dst, const GlobalTensor<T>& src, uint32_t blockCount, uint32_t blockLen,
                  uint64_t srcStrideBytes, uint64_t dstStrideBlocks, bool isPad, uint32_t left, uint32_t right, T padValue,
                  uint32_t maxLen)
{
    const char* api = "DataCopyPad(GM->local)";
    CheckLocalAligned(dst, api, "dst");
    CheckLocalIs(dst, api, "dst", false);
    if (blockCount < 1 || blockCount > kMaxBlockCount) {
        FailRule(kInvalidArgument, rule::kCopyPad, Str(api, ": blockCount ", blockCount, " outside [1, ", kMaxBlockCount, "]"));
    }
    if (blockLen < 1 || blockLen > maxLen) {
        FailRule(kInvalidArgument, rule::kCopyPad, Str(api, ": blockLen ", blockLen, " bytes outside [1, ", maxLen, "]"));
    }
    if (blockLen % sizeof(T) != 0) {
        Fail(kAlignment, Str(api, ": blockLen ", blockLen, " bytes is not a multiple of sizeof(T) = ", sizeof(T)));
    }
    if (srcStrideBytes % sizeof(T) != 0) {
        Fail(kAlignment, Str(api, ": srcStride ", srcStrideBytes, " bytes is not a multiple of sizeof(T)"));
    }
    if (left * sizeof(T) > ONE_BLK_SIZE || right * sizeof(T) > ONE_BLK_SIZE) {
        FailRule(kInvalidArgument, rule::kCopyPad, Str(api, ": leftPadding/rightPadding (", left, "/", right, " elements) exceed 32 bytes"));
    }
    const uint64_t elems = blockLen / sizeof(T);
    const uint64_t footprint = AlignUp((left + right) * sizeof(T) + blockLen, ONE_BLK_SIZE);
    const uint64_t ubStep = footprint + dstStrideBlocks * ONE_BLK_SIZE;  // bytes between block starts
    const uint64_t gmStep = (blockLen + srcStrideBytes) / sizeof(T);       // elements between block starts
    const uint64_t ubBytes = (blockCount - 1) * ubStep + footprint;
    T* out = dst.Data(ubBytes / sizeof(T), api, true);
    src.Read((blockCount - 1) * gmStep + elems, api, 0);
    for (uint32_t b = 0; b < blockCount; ++b) {
        T* blk = reinterpret_cast<T*>(reinterpret_cast<uint8_t*>(out) + b * ubStep);
        FillPoison(blk, footprint);
        const T* from = src.Read(b * gmStep + elems, api, b * gmStep) + b * gmStep;
        std::memcpy(blk + left, from, blockLen);
        if (isPad) {
            for (uint32_t i = 0; i < left; ++i) {
                blk[i] = padValue;
            }
            for (uint32_t i = 0; i < right; ++i) {
                blk[left + elems + i] = padValue;
            }
        }
    }
}

template <typename T>
inline void PadOut(const GlobalTensor<T>& dst, const LocalTensor<T>& src, uint32_t blockCount, uint32_t blockLen,
                   uint64_t srcStrideBlocks, uint64_t dstStrideBytes, uint32_t maxLen)
{
    const char* api = "DataCopyPad(local->GM)";
    CheckLocalAligned(src, api, "src");
    CheckLocalIs(src, api, "src", true);
    if (blockCount < 1 || blockCount > kMaxBlockCount) {
        FailRule(kInvalidArgument, rule::kCopyPad, Str(api, ": blockCount ", blockCount, " outside [1, ", kMaxBlockCount, "]"));
    }
    if (blockLen < 1 || blockLen > maxLen) {
        FailRule(kInvalidArgument, rule::kCopyPad, Str(api, ": blockLen ", blockLen, " bytes outside [1, ", maxLen, "]"));
    }
    if (blockLen % sizeof(T) != 0 || dstStrideBytes % sizeof(T) != 0) {
        Fail(kAlignment, Str(api, ": blockLen/dstStride (", blockLen, "/", dstStrideBytes, " bytes) not multiples of sizeof(T)"));
    }
    const uint64_t elems = blockLen / sizeof(T);
    const uint64_t footprint = AlignUp(blockLen, ONE_BLK_SIZE);
    const uint64_t ubStep = footprint + srcStrideBlocks * ONE_BLK_SIZE;
    const uint64_t gmStep = (blockLen + dstStrideBytes) / sizeof(T);
    const T* in = src.Data(((blockCount - 1) * ubStep + blockLen) / sizeof(T), api, false);
    for (uint32_t b = 0; b < blockCount; ++b) {
        const T* blk = reinterpret_cast<const T*>(reinterpret_cast<const uint8_t*>(in) + b * ubStep);
        T* to = dst.Write(b * gmStep + elems, api, b * gmStep) + b * gmStep;
        StoreGm(to, blk, elems);
    }
}

// DataCopy with DataCopyParams (all units DataBlocks). dir: 0 GM->local, 1 local->GM, 2 local->local
template <typename T>
inline void BlockCopy(T* dst, const T* src, const DataCopyParams& p, bool toGm)
{
    const uint64_t blk = ONE_BLK_SIZE / sizeof(T);
    for (uint32_t b = 0; b < p.blockCount; ++b) {
        const T* from = src + b * (p.blockLen + p.srcStride) * blk;
        T* to = dst + b * (p.blockLen + p.dstStride) * blk;
        if (toGm) {
            StoreGm(to, from, p.blockLen * blk);
        } else {
            std::memcpy(to, from, p.blockLen * ONE_BLK_SIZE);
        }
    }
}

inline uint64_t Span(const DataCopyParams& p, bool src)
{
    const uint64_t stride = src ? p.srcStride : p.dstStride;
    return p.blockCount == 0 ? 0 : (p.blockCount - 1) * (p.blockLen + stride) + p.blockLen;  // in DataBlocks
}

template <typename T>
inline void CheckCount(uint32_t count, const char* api)
{
    if ((static_cast<uint64_t>(count) * sizeof(T)) % ONE_BLK_SIZE != 0) {
        FailRule(kAlignment, rule::kCopyLength, Str(api, ": length ", count, " x ", sizeof(T), " = ", static_cast<uint64_t>(count) * sizeof(T),
                             " bytes is not a multiple of 32 bytes (use DataCopyPad for unaligned lengths)"));
    }
}

inline void CheckParams(const DataCopyParams& p, const char* api)
{
    if (p.blockCount < 1 || p.blockCount > kMaxBlockCount || p.blockLen < 1) {
        Fail(kInvalidArgument, Str(api, ": DataCopyParams blockCount ", p.blockCount, " / blockLen ", p.blockLen,
                                   " out of range (blockCount [1, 4095], blockLen >= 1 DataBlock)"));
    }
}

}  // namespace sim

// ---- DataCopy: contiguous, count elements -----------------------------------------------------------
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const uint32_t count)
{
    const char* api = "DataCopy(GM->local)";
    sim::CheckCount<T>(count, api);
    sim::CheckLocalAligned(dst, api, "dst");
    sim::CheckLocalIs(dst, api, "dst", false);
    T* out = dst.Data(count, api, true);
    std::memcpy(out, src.Read(count, api), static_cast<uint64_t>(count) * sizeof(T));
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const uint32_t count)
{
    const char* api = "DataCopy(local->GM)";
    sim::CheckCount<T>(count, api);
    sim::CheckLocalAligned(src, api, "src");
    sim::CheckLocalIs(src, api, "src", true);
    const T* in = src.Data(count, api, false);
    sim::StoreGm(dst.Write(count, api), in, count);
}

template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, const uint32_t count)
{
    const char* api = "DataCopy(local->local)";
    sim::CheckCount<T>(count, api);
    sim::CheckLocalAligned(dst, api, "dst");
    sim::CheckLocalAligned(src, api, "src");
    const T* in = src.Data(count, api, false);
    std::memmove(dst.Data(count, api, true), in, static_cast<uint64_t>(count) * sizeof(T));
}

// ---- DataCopy with DataCopyParams (DataBlock units) ------------------------------------------------
template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p)
{
    const char* api = "DataCopy(GM->local, DataCopyParams)";
    sim::CheckParams(p, api);
    sim::CheckLocalAligned(dst, api, "dst");
    sim::CheckLocalIs(dst, api, "dst", false);
    const uint64_t blk = ONE_BLK_SIZE / sizeof(T);
    T* out = dst.Data(sim::Span(p, false) * blk, api, true);
    sim::BlockCopy(out, src.Read(sim::Span(p, true) * blk, api), p, false);
}

template <typename T>
inline void DataCopy(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p)
{
    const char* api = "DataCopy(local->GM, DataCopyParams)";
    sim::CheckParams(p, api);
    sim::CheckLocalAligned(src, api, "src");
    sim::CheckLocalIs(src, api, "src", true);
    const uint64_t blk = ONE_BLK_SIZE / sizeof(T);
    const T* in = src.Data(sim::Span(p, true) * blk, api, false);
    T* out = dst.Read(sim::Span(p, false) * blk, api);
    // note the written blocks individually (strided), for the coverage check
    for (uint32_t b = 0; b < p.blockCount; ++b) {
        const uint64_t at = b * (p.blockLen + p.dstStride) * blk;
        dst.Write(at + p.blockLen * blk, api, at);
    }
    sim::BlockCopy(out, in, p, true);
}

template <typename T>
inline void DataCopy(const LocalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p)
{
    const char* api = "DataCopy(local->local, DataCopyParams)";
    sim::CheckParams(p, api);
    sim::CheckLocalAligned(dst, api, "dst");
    sim::CheckLocalAligned(src, api, "src");
    const uint64_t blk = ONE_BLK_SIZE / sizeof(T);
    const T* in = src.Data(sim::Span(p, true) * blk, api, false);
    sim::BlockCopy(dst.Data(sim::Span(p, false) * blk, api, true), in, p, false);
}

// ---- DataCopyPad ------------------------------------------------------------------------------------
template <typename T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyExtParams& p,
                        const DataCopyPadExtParams<T>& pad)
{
    sim::PadIn(dst, src, p.blockCount, p.blockLen, p.srcStride, p.dstStride, pad.isPad, pad.leftPadding, pad.rightPadding,
               pad.paddingValue, sim::kMaxPadBlockLen);
}

template <typename T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyExtParams& p)
{
    sim::PadOut(dst, src, p.blockCount, p.blockLen, p.srcStride, p.dstStride, sim::kMaxPadBlockLen);
}

template <typename T>
inline void DataCopyPad(const LocalTensor<T>& dst, const GlobalTensor<T>& src, const DataCopyParams& p,
                        const DataCopyPadParams& pad)
{
    sim::PadIn(dst, src, p.blockCount, p.blockLen, p.srcStride, p.dstStride, pad.isPad, pad.leftPadding, pad.rightPadding,
               static_cast<T>(static_cast<float>(pad.paddingValue)), 65535u);
}

template <typename T>
inline void DataCopyPad(const GlobalTensor<T>& dst, const LocalTensor<T>& src, const DataCopyParams& p)
{
    sim::PadOut(dst, src, p.blockCount, p.blockLen, p.srcStride, p.dstStride, 65535u);
}

// ---- GM helpers --------------------------------------------------------------------------------------
template <typename T>
inline void InitGlobalMemory(const GlobalTensor<T>& gm, const uint64_t size, const T value)
{
    T* p = gm.Write(size, "InitGlobalMemory");
    for (uint64_t i = 0; i < size; ++i) {
        p[i] = value;
    }
}

template <typename T>
inline void SetAtomicAdd()
{
    static_assert(sim::kOneOf<T, float, half, int32_t, int16_t, int8_t, bfloat16_t>, "SetAtomicAdd: unsupported type");
    sim::Core().atomicMode = 1;
}
template <typename T>
inline void SetAtomicMax()
{
    sim::Core().atomicMode = 2;
}
template <typename T>
inline void SetAtomicMin()
{
    sim::Core().atomicMode = 3;
}
inline void SetAtomicNone() { sim::Core().atomicMode = 0; }

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_DATA_COPY_H
