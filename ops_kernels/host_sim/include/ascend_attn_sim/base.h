/*
 * ascend_attn host simulation of AscendC: base definitions.
 *
 * Qualifiers and kernel-ABI macros, the scalar types half / bfloat16_t, the position / event /
 * rounding enums, and the per-core context every emulated API call checks its limits against.
 * Errors are C++ exceptions (sim::SimError with a status code); the runners turn them into an
 * error code + message at their C ABI boundary (see runtime.h).
 */
#ifndef ASCEND_ATTN_SIM_BASE_H
#define ASCEND_ATTN_SIM_BASE_H

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <type_traits>
#include <vector>

#include "chip_limits.h"

#ifndef ASCEND_ATTN_HOST_SIM
#define ASCEND_ATTN_HOST_SIM 1
#endif

// ---- qualifiers of the AscendC dialect: nothing on the host -------------------------------------
#define __aicore__
#define __global__
#define __gm__
#define __ubuf__
#define __cbuf__
#define __ca__
#define __cb__
#define __cc__
#ifndef GM_ADDR
#define GM_ADDR uint8_t*
#endif

// ---- scalar types ---------------------------------------------------------------------------------
// half: IEEE binary16. GCC >= 12 provides _Float16 on x86-64 (SSE2); conversions are RNE.
using half = _Float16;

// bfloat16_t: the upper 16 bits of a binary32. Conversion from float rounds to nearest even
// (NaN stays a quiet NaN); conversion to float is exact.
struct bfloat16_t {
    uint16_t bits = 0;
    bfloat16_t() = default;
    bfloat16_t(float f) : bits(FromFloat(f)) {}  // NOLINT: implicit like AscendC's bfloat16_t
    bfloat16_t(double d) : bits(FromFloat(static_cast<float>(d))) {}
    bfloat16_t(int v) : bits(FromFloat(static_cast<float>(v))) {}
    operator float() const  // NOLINT
    {
        uint32_t u = static_cast<uint32_t>(bits) << 16;
        float f;
        std::memcpy(&f, &u, 4);
        return f;
    }
    static bfloat16_t FromBits(uint16_t b)
    {
        bfloat16_t r;
        r.bits = b;
        return r;
    }
    static uint16_t FromFloat(float f)
    {
        uint32_t u;
        std::memcpy(&u, &f, 4);
        if ((u & 0x7fffffffu) > 0x7f800000u) {
            return static_cast<uint16_t>((u >> 16) | 0x0040u);  // quiet NaN, sign kept
        }
        uint32_t lsb = (u >> 16) & 1u;
        u += 0x7fffu + lsb;  // round to nearest, ties to even
        return static_cast<uint16_t>(u >> 16);
    }
};

// event ids of SetFlag/WaitFlag (a builtin enum of the device compiler)
enum event_t : int8_t { EVENT_ID0 = 0, EVENT_ID1, EVENT_ID2, EVENT_ID3, EVENT_ID4, EVENT_ID5, EVENT_ID6, EVENT_ID7 };

namespace AscendC {

// ---- positions (logical buffers) -------------------------------------------------------------------
enum class TPosition : uint8_t {
    GM,
    A1,
    A2,
    B1,
    B2,
    C1,
    C2,
    CO1,
    CO2,
    VECIN,
    VECOUT,
    VECCALC,
    LCM = VECCALC,
    SPM,
    SHM = SPM,
    TSCM,
    C2PIPE2GM,
    C2PIPE2LOCAL,
    MAX,
};
using QuePosition = TPosition;

// ---- constants --------------------------------------------------------------------------------------
constexpr uint32_t ONE_BLK_SIZE = 32;          // bytes of one DataBlock
constexpr uint32_t ONE_REPEAT_BYTE_SIZE = 256; // bytes one vector repeat processes
constexpr uint32_t DEFAULT_BLK_NUM = 8;        // DataBlocks per repeat
constexpr uint32_t DEFAULT_REPEAT_STRIDE = 8;
constexpr uint32_t BLOCK_CUBE = 16;
constexpr uint32_t MAX_REPEAT_TIMES = 255;

enum class RoundMode : uint8_t {
    CAST_NONE = 0,  // RINT when the conversion loses precision, exact otherwise
    CAST_RINT,      // to nearest, ties to even
    CAST_FLOOR,     // toward -inf
    CAST_CEIL,      // toward +inf
    CAST_ROUND,     // to nearest, ties away from zero
    CAST_TRUNC,     // toward zero
    CAST_ODD,       // von Neumann rounding (round to odd)
};

enum class CMPMODE : uint8_t { LT = 0, GT, EQ, LE, GE, NE };
enum class SELMODE : uint8_t { VSEL_CMPMASK_SPR = 0, VSEL_TENSOR_SCALAR_MODE, VSEL_TENSOR_TENSOR_MODE };

enum class HardEvent : uint8_t {
    MTE2_MTE1,
    MTE1_MTE2,
    MTE1_M,
    M_MTE1,
    MTE2_V,
    V_MTE2,
    MTE3_V,
    V_MTE3,
    M_V,
    V_M,
    V_V,
    MTE3_MTE1,
    MTE1_MTE3,
    MTE1_V,
    MTE2_M,
    M_MTE2,
    V_MTE1,
    M_FIX,
    FIX_M,
    MTE3_MTE2,
    MTE2_MTE3,
    S_V,
    V_S,
    S_MTE2,
    MTE2_S,
    S_MTE3,
    MTE3_S,
    MTE2_FIX,
    FIX_MTE2,
    FIX_S,
    M_S,
    FIX_MTE3,
    MAX,
};
using TEventID = int8_t;

enum class CacheMode : uint8_t { CACHE_MODE_DISABLE = 0, CACHE_MODE_NORMAL, CACHE_MODE_LAST, CACHE_MODE_PERSISTENT };

namespace sim {

// ---- status codes (returned by the runners' C ABI) -------------------------------------------------
enum Status : int {
    kOk = 0,
    kTilingError = 1,      // the host tiling function refused the request
    kUbOverflow = 2,       // a TPipe::InitBuffer exceeded the on-chip buffer (UB/L1/L0) capacity
    kAlignment = 3,        // DataCopy length / address not 32-byte aligned, misaligned operand
    kQueue = 4,            // TQue misuse: depth exceeded, empty DeQue, no free buffer, leak
    kOutOfBounds = 5,      // GM or local tensor access outside its buffer
    kCoverage = 6,         // an output byte was written zero or several times
    kUnsupported = 7,      // API used outside the emulated / hardware-supported subset
    kInvalidArgument = 8,  // bad parameter to an emulated API or runner
    kInternal = 99,
};

inline const char* StatusName(int code)
{
    switch (code) {
        case kOk: return "OK";
        case kTilingError: return "TILING_ERROR";
        case kUbOverflow: return "UB_OVERFLOW";
        case kAlignment: return "ALIGNMENT";
        case kQueue: return "QUEUE";
        case kOutOfBounds: return "OUT_OF_BOUNDS";
        case kCoverage: return "COVERAGE";
        case kUnsupported: return "UNSUPPORTED";
        case kInvalidArgument: return "INVALID_ARGUMENT";
        default: return "INTERNAL";
    }
}

class SimError : public std::runtime_error {
public:
    SimError(int code, const std::string& msg) : std::runtime_error(msg), code_(code) {}
    int code() const { return code_; }

private:
    int code_;
};

// Physical on-chip memories of one AI core (Atlas A2 / ascend910b sizes by default).
enum PhysMem : int { kUB = 0, kL1, kL0A, kL0B, kL0C, kBT, kFB, kPhysMemCount };

inline const char* PhysMemName(int m)
{
    static const char* const names[] = {"UB", "L1", "L0A", "L0B", "L0C", "BT", "FB"};
    return (m >= 0 && m < kPhysMemCount) ? names[m] : "?";
}

inline PhysMem PhysOf(TPosition pos)
{
    switch (pos) {
        case TPosition::VECIN:
        case TPosition::VECOUT:
        case TPosition::VECCALC:
        case TPosition::CO2:
            return kUB;
        case TPosition::A1:
        case TPosition::B1:
        case TPosition::C1:
        case TPosition::TSCM:
        case TPosition::SPM:
            return kL1;
        case TPosition::A2: return kL0A;
        case TPosition::B2: return kL0B;
        case TPosition::CO1: return kL0C;
        case TPosition::C2: return kBT;
        default: return kPhysMemCount;
    }
}

inline const char* PositionName(TPosition pos)
{
    switch (pos) {
        case TPosition::GM: return "GM";
        case TPosition::A1: return "A1";
        case TPosition::A2: return "A2";
        case TPosition::B1: return "B1";
        case TPosition::B2: return "B2";
        case TPosition::C1: return "C1";
        case TPosition::C2: return "C2";
        case TPosition::CO1: return "CO1";
        case TPosition::CO2: return "CO2";
        case TPosition::VECIN: return "VECIN";
        case TPosition::VECOUT: return "VECOUT";
        case TPosition::VECCALC: return "VECCALC";
        case TPosition::SPM: return "SPM";
        case TPosition::TSCM: return "TSCM";
        default: return "?";
    }
}

struct Config {
    // Capacities in bytes; ascend910b defaults. ub is the one the runners expose.
    uint64_t capacity[kPhysMemCount] = {kAscend910B.ub,  kAscend910B.l1,        kAscend910B.l0a,    kAscend910B.l0b,
                                        kAscend910B.l0c, kAscend910B.biasTable, kAscend910B.fixpipe};
    bool checkCoverage = true;  // outputs registered "exactly once" must be written exactly once
    bool poison = true;         // fresh on-chip memory and unspecified DataCopyPad padding = 0xFF bytes
    bool threaded = false;      // one thread per block (needed for SyncAll); sequential otherwise
};

struct CoreContext {
    int64_t blockIdx = 0;
    int64_t blockNum = 1;
    uint64_t tilingKey = 0;
    const Config* cfg = nullptr;
    uint8_t* arena[kPhysMemCount] = {};     // lazily allocated, 64-byte aligned
    uint64_t used[kPhysMemCount] = {};      // bytes handed out by the live TPipe(s)
    uint64_t peak[kPhysMemCount] = {};
    int atomicMode = 0;                     // 0 none, 1 add (SetAtomicAdd), 2 max, 3 min
    int deferredCode = 0;                   // errors found in destructors (cannot throw there)
    std::string deferredMsg;
    void* pipe = nullptr;                   // the TPipe created last (GetTPipePtr)
};

// Implemented in src/runtime.cpp.
CoreContext* CurrentCore();
uint8_t* Arena(CoreContext& core, int mem);
[[noreturn]] void Fail(int code, const std::string& msg);
// Fail naming the chip rule broken (chip_limits.h): the message ends with "[rule NAME]".
[[noreturn]] void FailRule(int code, const char* rule, const std::string& msg);
void Defer(int code, const std::string& msg);  // record an error found where throwing is not allowed
void CheckGm(const void* p, uint64_t bytes, bool write, const char* what);
void NoteGmWrite(const void* p, uint64_t bytes);
bool AtomicWriteLock(bool lock);  // serialises atomic-add stores in threaded mode
void SyncAllBlocks();

inline CoreContext& Core()
{
    CoreContext* c = CurrentCore();
    if (c == nullptr) {
        throw SimError(kInternal, "AscendC API called outside a simulated kernel launch");
    }
    return *c;
}

inline std::string ToStr(const std::string& s) { return s; }
inline std::string ToStr(const char* s) { return s ? std::string(s) : std::string("(null)"); }
template <typename T, typename = std::enable_if_t<std::is_arithmetic_v<T>>>
inline std::string ToStr(T v)
{
    if constexpr (std::is_same_v<T, bool>) {
        return v ? "true" : "false";
    } else if constexpr (std::is_floating_point_v<T>) {
        return std::to_string(static_cast<double>(v));
    } else if constexpr (std::is_signed_v<T>) {
        return std::to_string(static_cast<long long>(v));
    } else {
        return std::to_string(static_cast<unsigned long long>(v));
    }
}
template <typename... Args>
inline std::string Str(const Args&... args)
{
    std::string s;
    (s.append(ToStr(args)), ...);
    return s;
}

// ---- type traits of the emulated element types -----------------------------------------------------
template <typename T>
struct TypeInfo {
    static constexpr bool kFloat = std::is_floating_point_v<T>;
    static constexpr bool kInt = std::is_integral_v<T>;
    static constexpr const char* Name() { return "?"; }
};
template <> struct TypeInfo<half> {
    static constexpr bool kFloat = true;
    static constexpr bool kInt = false;
    static constexpr const char* Name() { return "half"; }
};
template <> struct TypeInfo<bfloat16_t> {
    static constexpr bool kFloat = true;
    static constexpr bool kInt = false;
    static constexpr const char* Name() { return "bfloat16_t"; }
};
template <> struct TypeInfo<float> {
    static constexpr bool kFloat = true;
    static constexpr bool kInt = false;
    static constexpr const char* Name() { return "float"; }
};

template <typename T>
inline constexpr bool kIsFloatLike = std::is_same_v<T, half> || std::is_same_v<T, bfloat16_t> || std::is_same_v<T, float>;

template <typename T, typename... Ts>
inline constexpr bool kOneOf = (std::is_same_v<T, Ts> || ...);

template <typename T>
inline double ToDouble(T v)
{
    if constexpr (std::is_same_v<T, bfloat16_t>) {
        return static_cast<double>(static_cast<float>(v));
    } else {
        return static_cast<double>(v);
    }
}

}  // namespace sim
}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_BASE_H
