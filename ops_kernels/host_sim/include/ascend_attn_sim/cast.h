/*
 * ascend_attn host simulation of AscendC: value conversion with RoundMode (CANN doc "Cast").
 *
 * Every source value is first widened exactly to double (all emulated source types fit), then
 * rounded once to the destination:
 *   float formats (half, bfloat16_t, float): the two neighbours of the value on the destination
 *     grid (normal and subnormal range) are computed exactly and one is picked by the mode:
 *     CAST_RINT nearest/ties-even, CAST_ROUND nearest/ties-away-from-zero, CAST_FLOOR, CAST_CEIL,
 *     CAST_TRUNC, CAST_ODD (inexact -> the neighbour with an odd last bit). CAST_NONE behaves as
 *     CAST_RINT (exact when nothing is lost). Overflow: the nearest modes give +-inf; the
 *     directed modes give the largest finite value when they round toward zero, inf otherwise.
 *     NaN stays NaN. float -> float with a mode other than CAST_NONE rounds to an integral value
 *     (AscendC's float "rounding" Cast).
 *   integers: round to an integral value by the mode (CAST_NONE = CAST_RINT), then saturate to
 *     the destination range; NaN -> 0 (project decision, semantics.md 0.5).
 */
#ifndef ASCEND_ATTN_SIM_CAST_H
#define ASCEND_ATTN_SIM_CAST_H

#include "ascend_attn_sim/base.h"

namespace AscendC {
namespace sim {

struct FloatFormat {
    int precision;  // significand bits including the implicit one
    int emin;       // exponent of the smallest normal
    double maxFinite;
};

template <typename T>
constexpr FloatFormat FormatOf()
{
    if constexpr (std::is_same_v<T, half>) {
        return {11, -14, 65504.0};
    } else if constexpr (std::is_same_v<T, bfloat16_t>) {
        return {8, -126, 3.3895313892515355e38};
    } else {
        return {24, -126, 3.4028234663852886e38};
    }
}

inline double RoundIntegral(double x, RoundMode mode)
{
    switch (mode) {
        case RoundMode::CAST_FLOOR: return std::floor(x);
        case RoundMode::CAST_CEIL: return std::ceil(x);
        case RoundMode::CAST_TRUNC: return std::trunc(x);
        case RoundMode::CAST_ROUND: return std::round(x);  // ties away from zero
        case RoundMode::CAST_ODD: {
            const double f = std::floor(x);
            if (f == x) {
                return x;
            }
            return std::fmod(f, 2.0) != 0.0 ? f : f + 1.0;
        }
        default: return std::nearbyint(x);  // current mode = to nearest, ties to even
    }
}

// Round x (exact double) onto the grid of float format F with the given mode; returns a double
// exactly representable in F (or +-inf / NaN).
template <typename D>
inline double RoundToFormat(double x, RoundMode mode)
{
    if (std::isnan(x) || std::isinf(x) || x == 0.0) {
        return x;
    }
    constexpr FloatFormat f = FormatOf<D>();
    int e;
    std::frexp(std::fabs(x), &e);  // |x| = m * 2^e, m in [0.5, 1): exponent of leading bit is e - 1
    int lead = e - 1;
    if (lead < f.emin) {
        lead = f.emin;  // subnormal range: fixed quantum
    }
    const double quantum = std::ldexp(1.0, lead - f.precision + 1);
    const double k = x / quantum;  // exact: division by a power of two
    const double kf = std::floor(k);
    double kr;
    if (kf == k) {
        kr = k;
    } else {
        const double frac = k - kf;  // exact
        switch (mode) {
            case RoundMode::CAST_FLOOR: kr = kf; break;
            case RoundMode::CAST_CEIL: kr = kf + 1.0; break;
            case RoundMode::CAST_TRUNC: kr = x > 0 ? kf : kf + 1.0; break;
            case RoundMode::CAST_ROUND:
                kr = frac < 0.5 ? kf : (frac > 0.5 ? kf + 1.0 : (x > 0 ? kf + 1.0 : kf));
                break;
            case RoundMode::CAST_ODD: kr = std::fmod(kf, 2.0) != 0.0 ? kf : kf + 1.0; break;
            default:  // CAST_NONE, CAST_RINT
                kr = frac < 0.5 ? kf : (frac > 0.5 ? kf + 1.0 : (std::fmod(kf, 2.0) == 0.0 ? kf : kf + 1.0));
                break;
        }
    }
    const double r = kr * quantum;
    if (std::fabs(r) > f.maxFinite) {
        bool towardZero = false;
        switch (mode) {
            case RoundMode::CAST_TRUNC:
            case RoundMode::CAST_ODD: towardZero = true; break;
            case RoundMode::CAST_FLOOR: towardZero = x > 0; break;
            case RoundMode::CAST_CEIL: towardZero = x < 0; break;
            default: break;
        }
        const double big = towardZero ? f.maxFinite : std::numeric_limits<double>::infinity();
        return x > 0 ? big : -big;
    }
    return r;
}

template <typename D, typename S>
inline D CastValue(S v, RoundMode mode)
{
    const double x = ToDouble(v);
    if constexpr (kIsFloatLike<D>) {
        if constexpr (std::is_same_v<D, S>) {
            if (mode == RoundMode::CAST_NONE || std::isnan(x) || std::isinf(x)) {
                return v;
            }
            return static_cast<D>(static_cast<float>(RoundIntegral(x, mode)));
        } else {
            const double r = RoundToFormat<D>(x, mode);
            if (std::isnan(r)) {
                return static_cast<D>(std::numeric_limits<float>::quiet_NaN());
            }
            return static_cast<D>(static_cast<float>(r));  // exact: r is on D's grid
        }
    } else {
        static_assert(std::is_integral_v<D>, "Cast: unsupported destination type");
        if (std::isnan(x)) {
            return D(0);
        }
        const double r = RoundIntegral(x, mode == RoundMode::CAST_NONE ? RoundMode::CAST_RINT : mode);
        const double lo = static_cast<double>(std::numeric_limits<D>::min());
        const double hi = static_cast<double>(std::numeric_limits<D>::max());
        if (r <= lo) {
            return std::numeric_limits<D>::min();
        }
        if (r >= hi) {
            return std::numeric_limits<D>::max();
        }
        return static_cast<D>(r);
    }
}

}  // namespace sim
}  // namespace AscendC

#endif  // ASCEND_ATTN_SIM_CAST_H
