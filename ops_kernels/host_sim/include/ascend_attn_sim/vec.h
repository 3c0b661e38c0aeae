/*
 * ascend_attn host simulation of AscendC: vector instructions.
 *
 * Two calling forms, as in AscendC:
 *   level 2 ("count" form):   Op(dst, src0[, src1 | scalar], count)
 *   level 0 (mask + repeat):  Op(dst, src0[, src1 | scalar], mask, repeatTimes, RepeatParams)
 * Level-0 semantics (CANN doc "通用说明 / 重复迭代"): one repeat covers 256 bytes = 8 DataBlocks
 * of 32 bytes; element i of a repeat lives in block i / (32 / sizeof(T)); operand address of
 * (repeat r, block k, lane j) = start + (r * repStride + k * blkStride) * 32 bytes + j * sizeof(T).
 * mask: continuous form = number of leading active elements (1..256/sizeof(T)); bit form =
 * uint64_t mask[2] (mask[0] elements 0..63, mask[1] elements 64..127, 16-bit types only).
 * Only isSetMask = true is emulated (no SetVectorMask/mask-counter mode).
 *
 * Checks on every call: operands live, in UB, start 32-byte aligned, inside their tensors;
 * dst may alias a source only exactly (same start), never partially; dtype in the hardware's
 * supported list (static_assert).
 *
 * Arithmetic: float ops are IEEE binary32 (+ - * / exact-rounded). half / bfloat16 ops compute
 * in binary32 and round to the element type once (same result as a correctly rounded 16-bit
 * op). Exp / Ln compute in double and round to float (the NPU's own Exp accuracy is unknown).
 * Max/Min propagate NaN.
 */
#ifndef ASCEND_ATTN_SIM_VEC_H
#define ASCEND_ATTN_SIM_VEC_H

#include <algorithm>

#include "ascend_attn_sim/cast.h"
#include "ascend_attn_sim/pipe.h"

namespace AscendC {

struct BinaryRepeatParams {
    BinaryRepeatParams() = default;
    BinaryRepeatParams(uint8_t dstBlkStrideIn, uint8_t src0BlkStrideIn, uint8_t src1BlkStrideIn, uint8_t dstRepStrideIn,
                       uint8_t src0RepStrideIn, uint8_t src1RepStrideIn)
        : dstBlkStride(dstBlkStrideIn), src0BlkStride(src0BlkStrideIn), src1BlkStride(src1BlkStrideIn),
          dstRepStride(dstRepStrideIn), src0RepStride(src0RepStrideIn), src1RepStride(src1RepStrideIn)
    {
    }
    uint32_t blockNumber = DEFAULT_BLK_NUM;
    uint8_t dstBlkStride = 1;
    uint8_t src0BlkStride = 1;
    uint8_t src1BlkStride = 1;
    uint8_t dstRepStride = 8;
    uint8_t src0RepStride = 8;
    uint8_t src1RepStride = 8;
    bool repeatStrideMode = false;
    bool strideSizeMode = false;
};

struct UnaryRepeatParams {
    UnaryRepeatParams() = default;
    UnaryRepeatParams(uint16_t dstBlkStrideIn, uint16_t srcBlkStrideIn, uint8_t dstRepStrideIn, uint8_t srcRepStrideIn)
        : dstBlkStride(dstBlkStrideIn), srcBlkStride(srcBlkStrideIn), dstRepStride(dstRepStrideIn), srcRepStride(srcRepStrideIn)
    {
    }
    uint32_t blockNumber = DEFAULT_BLK_NUM;
    uint16_t dstBlkStride = 1;
    uint16_t srcBlkStride = 1;
    uint8_t dstRepStride = 8;
    uint8_t srcRepStride = 8;
    bool repeatStrideMode = false;
    bool strideSizeMode = false;
};

struct CopyRepeatParams {
    CopyRepeatParams() = default;
    CopyRepeatParams(uint16_t dstStrideIn, uint16_t srcStrideIn, uint16_t dstRepeatSizeIn, uint16_t srcRepeatSizeIn)
        : dstStride(dstStrideIn), srcStride(srcStrideIn), dstRepeatSize(dstRepeatSizeIn), srcRepeatSize(srcRepeatSizeIn)
    {
    }
    uint16_t dstStride = 1;
    uint16_t srcStride = 1;
    uint16_t dstRepeatSize = 8;
    uint16_t srcRepeatSize = 8;
};

struct BrcbRepeatParams {
    BrcbRepeatParams() = default;
    BrcbRepeatParams(uint16_t dstBlkStrideIn, uint16_t dstRepStrideIn) : dstBlkStride(dstBlkStrideIn), dstRepStride(dstRepStrideIn) {}
    uint16_t dstBlkStride = 1;
    uint16_t dstRepStride = 8;
};

namespace sim {

template <typename T>
constexpr uint32_t BlkElems() { return ONE_BLK_SIZE / sizeof(T); }
template <typename T>
constexpr uint32_t RepElems() { return ONE_REPEAT_BYTE_SIZE / sizeof(T); }

template <typename T>
inline T* VecOperand(const LocalTensor<T>& t, uint64_t count, const char* api, const char* role, bool write)
{
    t.Live(api);
    if (t.SimSlot()->mem != kUB) {
        FailRule(kUnsupported, rule::kPosition, Str(api, ": ", role, " tensor is in ", PositionName(t.GetPosition()),
                               "; vector instructions only access UB (VECIN/VECOUT/VECCALC)"));
    }
    if (t.SimAddr() % ONE_BLK_SIZE != 0) {
        FailRule(kAlignment, rule::kAddrAlign, Str(api, ": ", role, " address ", t.SimAddr(), " is not 32-byte aligned"));
    }
    return t.Data(count, api, write);
}

template <typename A, typename B>
inline void CheckOverlap(const LocalTensor<A>& dst, uint64_t nd, const LocalTensor<B>& src, uint64_t ns, const char* api)
{
    const uint8_t* d0 = reinterpret_cast<const uint8_t*>(dst.GetPhyAddr());
    const uint8_t* s0 = reinterpret_cast<const uint8_t*>(src.GetPhyAddr());
    const uint8_t* d1 = d0 + nd * sizeof(A);
    const uint8_t* s1 = s0 + ns * sizeof(B);
    const bool overlap = d0 < s1 && s0 < d1;
    if (overlap && (d0 != s0 || sizeof(A) != sizeof(B))) {
        Fail(kUnsupported, Str(api, ": dst partially overlaps a source (only exact in-place operation is allowed)"));
    }
}

inline void CheckCount(int64_t count, const char* api)
{
    if (count < 0) {
        Fail(kInvalidArgument, Str(api, ": negative count ", count));
    }
}

// Element-type arithmetic: floats through binary32, integers through int64 (wrapping on store).
template <typename T, typename F>
inline T Ar1(T a, F f)
{
    if constexpr (kIsFloatLike<T>) {
        return static_cast<T>(static_cast<float>(f(static_cast<float>(a))));
    } else {
        return static_cast<T>(f(static_cast<int64_t>(a)));
    }
}
template <typename T, typename F>
inline T Ar2(T a, T b, F f)
{
    if constexpr (kIsFloatLike<T>) {
        return static_cast<T>(static_cast<float>(f(static_cast<float>(a), static_cast<float>(b))));
    } else {
        return static_cast<T>(f(static_cast<int64_t>(a), static_cast<int64_t>(b)));
    }
}

template <typename V>
inline V MaxNan(V a, V b)
{
    if constexpr (std::is_floating_point_v<V>) {
        if (std::isnan(a)) return a;
        if (std::isnan(b)) return b;
    }
    return a > b ? a : b;
}
template <typename V>
inline V MinNan(V a, V b)
{
    if constexpr (std::is_floating_point_v<V>) {
        if (std::isnan(a)) return a;
        if (std::isnan(b)) return b;
    }
    return a < b ? a : b;
}

// ---- level-0 mask handling -------------------------------------------------------------------------
struct MaskSpec {
    bool bits = false;
    uint64_t count = 0;
    uint64_t word[2] = {0, 0};
};
inline MaskSpec ContMask(uint64_t m)
{
    MaskSpec s;
    s.count = m;
    return s;
}
inline MaskSpec BitMask(const uint64_t* m)
{
    MaskSpec s;
    s.bits = true;
    s.word[0] = m[0];
    s.word[1] = m[1];
    return s;
}
inline bool Active(const MaskSpec& m, uint32_t i)
{
    return m.bits ? ((m.word[i / 64] >> (i % 64)) & 1u) != 0 : i < m.count;
}
inline void CheckMask(const MaskSpec& m, uint32_t perRepeat, const char* api)
{
    if (!m.bits && (m.count < 1 || m.count > perRepeat)) {
        FailRule(kInvalidArgument, rule::kMaskRange, Str(api, ": continuous mask ", m.count, " outside [1, ", perRepeat, "]"));
    }
    if (m.bits && m.word[0] == 0 && m.word[1] == 0) {
        FailRule(kInvalidArgument, rule::kMaskRange, Str(api, ": bit mask with maskHigh and maskLow both 0 (no element)"));
    }
    if (m.bits && perRepeat <= 64 && m.word[1] != 0) {
        FailRule(kInvalidArgument, rule::kMaskRange, Str(api, ": mask[1] must be 0 for 32-bit types (64 elements per repeat)"));
    }
}

struct Stride {
    uint64_t blk;  // DataBlocks between consecutive blocks of one repeat
    uint64_t rep;  // DataBlocks between consecutive repeats
};

template <typename T>
inline uint64_t Offset0(uint32_t r, uint32_t i, Stride s)
{
    const uint32_t be = BlkElems<T>();
    return (static_cast<uint64_t>(r) * s.rep + static_cast<uint64_t>(i / be) * s.blk) * be + i % be;
}

// Largest element offset + 1 an operand touches across `repeat` repeats (exact for the mask).
template <typename T>
inline uint64_t Extent0(const MaskSpec& m, uint32_t perRepeat, uint32_t repeat, Stride s)
{
    if (repeat == 0) {
        return 0;
    }
    uint64_t hi = 0;
    for (uint32_t i = 0; i < perRepeat; ++i) {
        if (Active(m, i)) {
            const uint64_t off = Offset0<T>(repeat - 1, i, s) + 1;
            hi = off > hi ? off : hi;
            const uint64_t first = Offset0<T>(0, i, s) + 1;  // rep stride 0 / large blk strides
            hi = first > hi ? first : hi;
        }
    }
    return hi;
}

// Generic level-0 engine for up to two sources with their own element types.
template <typename D, typename S0, typename S1, typename Op>
inline void Level0(const char* api, const LocalTensor<D>& dst, Stride sd, const LocalTensor<S0>* s0, Stride ss0,
                   const LocalTensor<S1>* s1, Stride ss1, const MaskSpec& mask, uint32_t repeat, Op op)
{
    constexpr size_t big = sizeof(D) > sizeof(S0) ? (sizeof(D) > sizeof(S1) ? sizeof(D) : sizeof(S1))
                                                  : (sizeof(S0) > sizeof(S1) ? sizeof(S0) : sizeof(S1));
    const uint32_t perRepeat = ONE_REPEAT_BYTE_SIZE / big;
    CheckMask(mask, perRepeat, api);
    if (repeat > MAX_REPEAT_TIMES) {
        FailRule(kInvalidArgument, rule::kRepeat, Str(api, ": repeatTimes ", repeat, " > 255"));
    }
    D* d = VecOperand(dst, Extent0<D>(mask, perRepeat, repeat, sd), api, "dst", true);
    const S0* a = s0 ? VecOperand(*s0, Extent0<S0>(mask, perRepeat, repeat, ss0), api, "src0", false) : nullptr;
    const S1* b = s1 ? VecOperand(*s1, Extent0<S1>(mask, perRepeat, repeat, ss1), api, "src1", false) : nullptr;
    for (uint32_t r = 0; r < repeat; ++r) {
        for (uint32_t i = 0; i < perRepeat; ++i) {
            if (!Active(mask, i)) {
                continue;
            }
            const S0 va = a ? a[Offset0<S0>(r, i, ss0)] : S0();
            const S1 vb = b ? b[Offset0<S1>(r, i, ss1)] : S1();
            D& out = d[Offset0<D>(r, i, sd)];
            out = op(va, vb, out);
        }
    }
}

// level-2 engines
template <typename T, typename Op>
inline void Binary2(const char* api, const LocalTensor<T>& dst, const LocalTensor<T>& s0, const LocalTensor<T>& s1,
                    int64_t count, Op op)
{
    CheckCount(count, api);
    T* d = VecOperand(dst, count, api, "dst", true);
    const T* a = VecOperand(s0, count, api, "src0", false);
    const T* b = VecOperand(s1, count, api, "src1", false);
    CheckOverlap(dst, count, s0, count, api);
    CheckOverlap(dst, count, s1, count, api);
    for (int64_t i = 0; i < count; ++i) {
        d[i] = op(a[i], b[i]);
    }
}

template <typename D, typename S, typename Op>
inline void Unary2(const char* api, const LocalTensor<D>& dst, const LocalTensor<S>& src, int64_t count, Op op)
{
    CheckCount(count, api);
    D* d = VecOperand(dst, count, api, "dst", true);
    const S* a = VecOperand(src, count, api, "src", false);
    CheckOverlap(dst, count, src, count, api);
    for (int64_t i = 0; i < count; ++i) {
        d[i] = op(a[i]);
    }
}

// dtype lists of Atlas A2 (ascend910b) per the CANN API pages
template <typename T>
inline constexpr bool kArithType = kOneOf<T, half, float, int16_t, int32_t>;
template <typename T>
inline constexpr bool kFloatType = kOneOf<T, half, float>;
template <typename T>
inline constexpr bool kB16B32Type = kOneOf<T, half, bfloat16_t, float, int16_t, uint16_t, int32_t, uint32_t>;

}  // namespace sim

// ==== binary ops ======================================================================================
#define ASCEND_SIM_BINARY(NAME, TYPES_OK, EXPR)                                                                  \
    template <typename T>                                                                                        \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,          \
                     const int32_t& count)                                                                       \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        sim::Binary2(#NAME, dst, src0, src1, count,                                                              \
                     [](T a, T b) { return sim::Ar2(a, b, [](auto x, auto y) { return EXPR; }); });             \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,          \
                     uint64_t mask, const uint8_t repeatTimes, const BinaryRepeatParams& p)                      \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        sim::Level0(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src0, {p.src0BlkStride, p.src0RepStride},     \
                    &src1, {p.src1BlkStride, p.src1RepStride}, sim::ContMask(mask), repeatTimes,                \
                    [](T a, T b, T) { return sim::Ar2(a, b, [](auto x, auto y) { return EXPR; }); });           \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1,          \
                     uint64_t mask[], const uint8_t repeatTimes, const BinaryRepeatParams& p)                    \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        sim::Level0(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src0, {p.src0BlkStride, p.src0RepStride},     \
                    &src1, {p.src1BlkStride, p.src1RepStride}, sim::BitMask(mask), repeatTimes,                 \
                    [](T a, T b, T) { return sim::Ar2(a, b, [](auto x, auto y) { return EXPR; }); });           \
    }

ASCEND_SIM_BINARY(Add, sim::kArithType<T>, x + y)
ASCEND_SIM_BINARY(Sub, sim::kArithType<T>, x - y)
ASCEND_SIM_BINARY(Mul, sim::kArithType<T>, x * y)
ASCEND_SIM_BINARY(Div, sim::kFloatType<T>, x / y)
ASCEND_SIM_BINARY(Max, sim::kArithType<T>, sim::MaxNan(x, y))
ASCEND_SIM_BINARY(Min, sim::kArithType<T>, sim::MinNan(x, y))
#undef ASCEND_SIM_BINARY

// ==== unary ops =======================================================================================
#define ASCEND_SIM_UNARY(NAME, TYPES_OK, EXPR)                                                                   \
    template <typename T>                                                                                        \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const int32_t& count)                 \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        sim::Unary2(#NAME, dst, src, count, [](T a) { return sim::Ar1(a, [](auto x) { return EXPR; }); });     \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask, const uint8_t repeatTimes, \
                     const UnaryRepeatParams& p)                                                                 \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        sim::Level0<T, T, T>(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, \
                             nullptr, {0, 0}, sim::ContMask(mask), repeatTimes,                                  \
                             [](T a, T, T) { return sim::Ar1(a, [](auto x) { return EXPR; }); });              \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask[], const uint8_t repeatTimes, \
                     const UnaryRepeatParams& p)                                                                 \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        sim::Level0<T, T, T>(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, \
                             nullptr, {0, 0}, sim::BitMask(mask), repeatTimes,                                   \
                             [](T a, T, T) { return sim::Ar1(a, [](auto x) { return EXPR; }); });              \
    }

ASCEND_SIM_UNARY(Exp, sim::kFloatType<T>, static_cast<float>(std::exp(static_cast<double>(x))))
ASCEND_SIM_UNARY(Ln, sim::kFloatType<T>, static_cast<float>(std::log(static_cast<double>(x))))
ASCEND_SIM_UNARY(Abs, sim::kFloatType<T>, std::fabs(x))
ASCEND_SIM_UNARY(Sqrt, sim::kFloatType<T>, std::sqrt(x))
ASCEND_SIM_UNARY(Rsqrt, sim::kFloatType<T>, static_cast<float>(1.0 / std::sqrt(static_cast<double>(x))))
ASCEND_SIM_UNARY(Reciprocal, sim::kFloatType<T>, 1.0f / x)
ASCEND_SIM_UNARY(Relu, (sim::kOneOf<T, half, float, int32_t>), (x > 0 ? x : decltype(x)(0)))
#undef ASCEND_SIM_UNARY

// ==== tensor-scalar ops ===============================================================================
#define ASCEND_SIM_SCALAR(NAME, TYPES_OK, EXPR)                                                                  \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalarValue, const int32_t& count) \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        const T s = scalarValue;                                                                                 \
        sim::Unary2(#NAME, dst, src, count, [s](T a) { return sim::Ar2(a, s, [](auto x, auto y) { return EXPR; }); }); \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalarValue, uint64_t mask,  \
                     const uint8_t repeatTimes, const UnaryRepeatParams& p)                                      \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        const T s = scalarValue;                                                                                 \
        sim::Level0<T, T, T>(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, \
                             nullptr, {0, 0}, sim::ContMask(mask), repeatTimes,                                  \
                             [s](T a, T, T) { return sim::Ar2(a, s, [](auto x, auto y) { return EXPR; }); });   \
    }                                                                                                            \
    template <typename T, bool isSetMask = true>                                                                 \
    inline void NAME(const LocalTensor<T>& dst, const LocalTensor<T>& src, const T& scalarValue, uint64_t mask[], \
                     const uint8_t repeatTimes, const UnaryRepeatParams& p)                                      \
    {                                                                                                            \
        static_assert(TYPES_OK, #NAME ": element type not supported by the hardware (see the CANN API page)");   \
        static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");                    \
        const T s = scalarValue;                                                                                 \
        sim::Level0<T, T, T>(#NAME, dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, \
                             nullptr, {0, 0}, sim::BitMask(mask), repeatTimes,                                   \
                             [s](T a, T, T) { return sim::Ar2(a, s, [](auto x, auto y) { return EXPR; }); });   \
    }

ASCEND_SIM_SCALAR(Adds, sim::kArithType<T>, x + y)
ASCEND_SIM_SCALAR(Muls, sim::kArithType<T>, x * y)
ASCEND_SIM_SCALAR(Maxs, sim::kArithType<T>, sim::MaxNan(x, y))
ASCEND_SIM_SCALAR(Mins, sim::kArithType<T>, sim::MinNan(x, y))
#undef ASCEND_SIM_SCALAR

// ==== Duplicate / Copy / Brcb =========================================================================
template <typename T>
inline void Duplicate(const LocalTensor<T>& dst, const T& scalarValue, const int32_t& count)
{
    static_assert(sim::kB16B32Type<T>, "Duplicate: 16/32-bit element types only");
    sim::CheckCount(count, "Duplicate");
    T* d = sim::VecOperand(dst, count, "Duplicate", "dst", true);
    for (int32_t i = 0; i < count; ++i) {
        d[i] = scalarValue;
    }
}
template <typename T, bool isSetMask = true>
inline void Duplicate(const LocalTensor<T>& dst, const T& scalarValue, uint64_t mask, const uint8_t repeatTimes,
                      const uint16_t dstBlockStride, const uint8_t dstRepeatStride)
{
    static_assert(sim::kB16B32Type<T>, "Duplicate: 16/32-bit element types only");
    const T s = scalarValue;
    sim::Level0<T, T, T>("Duplicate", dst, {dstBlockStride, dstRepeatStride}, nullptr, {0, 0}, nullptr, {0, 0},
                         sim::ContMask(mask), repeatTimes, [s](T, T, T) { return s; });
}
template <typename T, bool isSetMask = true>
inline void Duplicate(const LocalTensor<T>& dst, const T& scalarValue, uint64_t mask[], const uint8_t repeatTimes,
                      const uint16_t dstBlockStride, const uint8_t dstRepeatStride)
{
    static_assert(sim::kB16B32Type<T>, "Duplicate: 16/32-bit element types only");
    const T s = scalarValue;
    sim::Level0<T, T, T>("Duplicate", dst, {dstBlockStride, dstRepeatStride}, nullptr, {0, 0}, nullptr, {0, 0},
                         sim::BitMask(mask), repeatTimes, [s](T, T, T) { return s; });
}

template <typename T, bool isSetMask = true>
inline void Copy(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask, const uint8_t repeatTimes,
                 const CopyRepeatParams& p)
{
    static_assert(sim::kB16B32Type<T>, "Copy: 16/32-bit element types only");
    sim::Level0<T, T, T>("Copy", dst, {p.dstStride, p.dstRepeatSize}, &src, {p.srcStride, p.srcRepeatSize}, nullptr, {0, 0},
                         sim::ContMask(mask), repeatTimes, [](T a, T, T) { return a; });
}
template <typename T, bool isSetMask = true>
inline void Copy(const LocalTensor<T>& dst, const LocalTensor<T>& src, uint64_t mask[], const uint8_t repeatTimes,
                 const CopyRepeatParams& p)
{
    static_assert(sim::kB16B32Type<T>, "Copy: 16/32-bit element types only");
    sim::Level0<T, T, T>("Copy", dst, {p.dstStride, p.dstRepeatSize}, &src, {p.srcStride, p.srcRepeatSize}, nullptr, {0, 0},
                         sim::BitMask(mask), repeatTimes, [](T a, T, T) { return a; });
}

// Brcb: each repeat reads 8 consecutive src elements; element k fills DataBlock k of the repeat.
template <typename T>
inline void Brcb(const LocalTensor<T>& dst, const LocalTensor<T>& src0, const uint8_t repeatTimes, const BrcbRepeatParams& p)
{
    static_assert(sim::kOneOf<T, half, bfloat16_t, float, int16_t, uint16_t, int32_t, uint32_t>,
                  "Brcb: 16/32-bit element types only");
    const char* api = "Brcb";
    if (repeatTimes == 0) {
        return;
    }
    const uint32_t be = sim::BlkElems<T>();
    const uint64_t lastBlock = (static_cast<uint64_t>(repeatTimes - 1) * p.dstRepStride + 7ull * p.dstBlkStride) * be + be;
    const uint64_t firstRepLast = (7ull * p.dstBlkStride) * be + be;
    T* d = sim::VecOperand(dst, lastBlock > firstRepLast ? lastBlock : firstRepLast, api, "dst", true);
    const T* s = sim::VecOperand(src0, static_cast<uint64_t>(repeatTimes) * 8, api, "src0", false);
    sim::CheckOverlap(dst, lastBlock, src0, static_cast<uint64_t>(repeatTimes) * 8, api);
    for (uint32_t r = 0; r < repeatTimes; ++r) {
        for (uint32_t k = 0; k < 8; ++k) {
            T* blk = d + (static_cast<uint64_t>(r) * p.dstRepStride + static_cast<uint64_t>(k) * p.dstBlkStride) * be;
            for (uint32_t j = 0; j < be; ++j) {
                blk[j] = s[r * 8 + k];
            }
        }
    }
}

// ==== Cast ============================================================================================
template <typename T, typename U>
inline void Cast(const LocalTensor<T>& dst, const LocalTensor<U>& src, const RoundMode& roundMode, const uint32_t count)
{
    const RoundMode m = roundMode;
    sim::Unary2("Cast", dst, src, count, [m](U a) { return sim::CastValue<T>(a, m); });
}
template <typename T, typename U, bool isSetMask = true>
inline void Cast(const LocalTensor<T>& dst, const LocalTensor<U>& src, const RoundMode& roundMode, uint64_t mask,
                 const uint8_t repeatTimes, const UnaryRepeatParams& p)
{
    static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");
    const RoundMode m = roundMode;
    sim::Level0<T, U, U>("Cast", dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, nullptr,
                         {0, 0}, sim::ContMask(mask), repeatTimes, [m](U a, U, T) { return sim::CastValue<T>(a, m); });
}
template <typename T, typename U, bool isSetMask = true>
inline void Cast(const LocalTensor<T>& dst, const LocalTensor<U>& src, const RoundMode& roundMode, uint64_t mask[],
                 const uint8_t repeatTimes, const UnaryRepeatParams& p)
{
    static_assert(isSetMask, "ascend_attn host sim: only isSetMask = true is emulated");
    const RoundMode m = roundMode;
    sim::Level0<T, U, U>("Cast", dst, {p.dstBlkStride, p.dstRepStride}, &src, {p.srcBlkStride, p.srcRepStride}, nullptr,
                         {0, 0}, sim::BitMask(mask), repeatTimes, [m](U a, U, T) { return sim::CastValue<T>(a, m); });
}

// ==== Compare / Select ================================================================================
namespace sim {
template <typename T>
inline bool Cmp(T a, T b, CMPMODE mode)
{
    const double x = ToDouble(a);
    const double y = ToDouble(b);
    switch (mode) {
        case CMPMODE::LT: return x < y;
        case CMPMODE::GT: return x > y;
        case CMPMODE::EQ: return x == y;
        case CMPMODE::LE: return x <= y;
        case CMPMODE::GE: return x >= y;
        default: return x != y;
    }
}
template <typename U>
inline uint8_t* MaskBytes(const LocalTensor<U>& m, uint64_t bits, const char* api, bool write)
{
    const uint64_t bytes = (bits + 7) / 8;
    U* p = VecOperand(m, (bytes + sizeof(U) - 1) / sizeof(U), api, "mask", write);
    return reinterpret_cast<uint8_t*>(p);
}
}  // namespace sim

// dst bit i (LSB first in each byte) = src0[i] <cmp> src1[i]; count * sizeof(T) must be a
// multiple of 256 bytes (level-2 Compare constraint).
template <typename T, typename U>
inline void Compare(const LocalTensor<U>& dst, const LocalTensor<T>& src0, const LocalTensor<T>& src1, CMPMODE cmpMode,
                    uint32_t count)
{
    static_assert(sim::kFloatType<T> || std::is_same_v<T, int32_t>, "Compare: half/float (int32 for EQ/NE)");
    const char* api = "Compare";
    if ((static_cast<uint64_t>(count) * sizeof(T)) % ONE_REPEAT_BYTE_SIZE != 0) {
        sim::FailRule(sim::kAlignment, sim::rule::kCountAlign, sim::Str(api, ": count * sizeof(T) = ", count * sizeof(T), " is not a multiple of 256 bytes"));
    }
    const T* a = sim::VecOperand(src0, count, api, "src0", false);
    const T* b = sim::VecOperand(src1, count, api, "src1", false);
    uint8_t* d = sim::MaskBytes(dst, count, api, true);
    std::memset(d, 0, (count + 7) / 8);
    for (uint32_t i = 0; i < count; ++i) {
        if (sim::Cmp(a[i], b[i], cmpMode)) {
            d[i / 8] = static_cast<uint8_t>(d[i / 8] | (1u << (i % 8)));
        }
    }
}

// count * sizeof(T) must be a multiple of 32 bytes.
template <typename T, typename U>
inline void CompareScalar(const LocalTensor<U>& dst, const LocalTensor<T>& src0, const T src1Scalar, CMPMODE cmpMode,
                          uint32_t count)
{
    static_assert(sim::kFloatType<T> || std::is_same_v<T, int32_t>, "CompareScalar: half/float (int32 for EQ/NE)");
    const char* api = "CompareScalar";
    if ((static_cast<uint64_t>(count) * sizeof(T)) % ONE_BLK_SIZE != 0) {
        sim::FailRule(sim::kAlignment, sim::rule::kCountAlign, sim::Str(api, ": count * sizeof(T) = ", count * sizeof(T), " is not a multiple of 32 bytes"));
    }
    const T* a = sim::VecOperand(src0, count, api, "src0", false);
    uint8_t* d = sim::MaskBytes(dst, count, api, true);
    std::memset(d, 0, (count + 7) / 8);
    for (uint32_t i = 0; i < count; ++i) {
        if (sim::Cmp(a[i], src1Scalar, cmpMode)) {
            d[i / 8] = static_cast<uint8_t>(d[i / 8] | (1u << (i % 8)));
        }
    }
}

// dst[i] = bit i of selMask ? src0[i] : src1[i]
template <typename T, typename U>
inline void Select(const LocalTensor<T>& dst, const LocalTensor<U>& selMask, const LocalTensor<T>& src0,
                   const LocalTensor<T>& src1, SELMODE selMode, uint32_t count)
{
    static_assert(sim::kFloatType<T>, "Select: half/float");
    const char* api = "Select";
    if (selMode != SELMODE::VSEL_TENSOR_TENSOR_MODE && selMode != SELMODE::VSEL_CMPMASK_SPR) {
        sim::Fail(sim::kInvalidArgument, "Select(tensor, tensor): selMode must be VSEL_TENSOR_TENSOR_MODE or VSEL_CMPMASK_SPR");
    }
    T* d = sim::VecOperand(dst, count, api, "dst", true);
    const T* a = sim::VecOperand(src0, count, api, "src0", false);
    const T* b = sim::VecOperand(src1, count, api, "src1", false);
    const uint8_t* m = sim::MaskBytes(selMask, count, api, false);
    sim::CheckOverlap(dst, count, src0, count, api);
    sim::CheckOverlap(dst, count, src1, count, api);
    for (uint32_t i = 0; i < count; ++i) {
        d[i] = ((m[i / 8] >> (i % 8)) & 1u) ? a[i] : b[i];
    }
}

template <typename T, typename U>
inline void Select(const LocalTensor<T>& dst, const LocalTensor<U>& selMask, const LocalTensor<T>& src0, T src1,
                   SELMODE selMode, uint32_t count)
{
    static_assert(sim::kFloatType<T>, "Select: half/float");
    const char* api = "Select";
    if (selMode != SELMODE::VSEL_TENSOR_SCALAR_MODE) {
        sim::Fail(sim::kInvalidArgument, "Select(tensor, scalar): selMode must be VSEL_TENSOR_SCALAR_MODE");
    }
    T* d = sim::VecOperand(dst, count, api, "dst", true);
    const T* a = sim::VecOperand(src0, count, api, "src0", false);
    const uint8_t* m = sim::MaskBytes(selMask, count, api, false);
    sim::CheckOverlap(dst, count, src0, count, api);
    for (uint32_t i = 0; i < count; ++i) {
        d[i] = ((m[i / 8] >> (i % 8)) & 1u) ? a[i] : src1;
    }
}

// ==== reductions (level 2) ============================================================================
namespace sim {
// workLocal size per the ReduceMax/ReduceSum pages: one partial (value[, index]) per repeat,
// rounded up to a DataBlock.
template <typename T>
inline uint64_t ReduceWorkElems(uint64_t count, bool pairs)
{
    const uint64_t reps = (count + RepElems<T>() - 1) / RepElems<T>();
    const uint64_t n = reps * (pairs ? 2 : 1);
    return (n + BlkElems<T>() - 1) / BlkElems<T>() * BlkElems<T>();
}

// Tree sum of one repeat's worth, then of the partials (the order of the vector unit's vcadd).
template <typename T>
inline float TreeSum(const T* p, uint64_t n)
{
    std::vector<float> level(p, p + n);
    for (auto& v : level) {
        v = static_cast<float>(static_cast<T>(v));
    }
    while (level.size() > 1) {
        std::vector<float> next((level.size() + 1) / 2);
        for (size_t i = 0; i < next.size(); ++i) {
            const float a = level[2 * i];
            const float b = 2 * i + 1 < level.size() ? level[2 * i + 1] : 0.0f;
            next[i] = static_cast<float>(static_cast<T>(a + b));  // each add rounds to T
        }
        level.swap(next);
    }
    return level.empty() ? 0.0f : level[0];
}

template <typename T>
inline void ReduceMaxMin(const char* api, const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& work,
                         int32_t count, bool calIndex, bool isMax)
{
    static_assert(kFloatType<T>, "ReduceMax/ReduceMin: half/float");
    if (count < 1) {
        Fail(kInvalidArgument, Str(api, ": count must be >= 1"));
    }
    const T* s = VecOperand(src, count, api, "src", false);
    VecOperand(work, ReduceWorkElems<T>(count, true), api, "workLocal", true);
    T* d = VecOperand(dst, calIndex ? 2 : 1, api, "dst", true);
    uint32_t best = 0;
    for (int32_t i = 1; i < count; ++i) {
        const float a = static_cast<float>(s[i]);
        const float b = static_cast<float>(s[best]);
        if (std::isnan(b)) {
            break;
        }
        if (std::isnan(a) || (isMax ? a > b : a < b)) {
            best = static_cast<uint32_t>(i);
        }
    }
    d[0] = s[best];
    if (calIndex) {
        if constexpr (sizeof(T) == 4) {
            std::memcpy(&d[1], &best, 4);
        } else {
            const uint16_t b16 = static_cast<uint16_t>(best);
            std::memcpy(&d[1], &b16, 2);
        }
    }
}
}  // namespace sim

template <typename T>
inline void ReduceMax(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& workLocal,
                      const int32_t count, bool calIndex = false)
{
    sim::ReduceMaxMin("ReduceMax", dst, src, workLocal, count, calIndex, true);
}
template <typename T>
inline void ReduceMin(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& workLocal,
                      const int32_t count, bool calIndex = false)
{
    sim::ReduceMaxMin("ReduceMin", dst, src, workLocal, count, calIndex, false);
}
template <typename T>
inline void ReduceSum(const LocalTensor<T>& dst, const LocalTensor<T>& src, const LocalTensor<T>& workLocal,
                      const int32_t count)
{
    static_assert(sim::kFloatType<T>, "ReduceSum: half/float");
    const char* api = "ReduceSum";
    if (count < 1) {
        sim::Fail(sim::kInvalidArgument, "ReduceSum: count must be >= 1");
    }
    const T* s = sim::VecOperand(src, count, api, "src", false);
    sim::VecOperand(workLocal, sim::ReduceWorkElems<T>(count, false), api, "workLocal", true);
    T* d = sim::VecOperand(dst, 1, api, "dst", true);
    const uint64_t rep = sim::RepElems<T>();
    std::vector<T> partial;
    for (uint64_t i = 0; i < static_cast<uint64_t>(count); i += rep) {
        const uint64_t n = std::min<uint64_t>(rep, count - i);
        partial.push_back(static_cast<T>(sim::TreeSum(s + i, n)));
    }
    while (partial.size() > 1) {
        std::vector<T> next;
        for (size_t i = 0; i < partial.size(); i += rep) {
            const size_t n = std::min<size_t>(rep, partial.size() - i);
            next.push_back(static_cast<T>(sim::TreeSum(partial.data() + i, n)));
        }
        partial.swap(next);
    }
    d[0] = partial[0];
}

}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_VEC_H
