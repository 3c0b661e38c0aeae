// Shared pieces of the native CPU kernels: rounding rules of the NPU kernels (docs: semantics
// "rounding"), run-time CPU feature detection, and small plan helpers. Framework-neutral: plain
// pointers and sizes; the ATen binding of each op lives at the bottom of that op's .cpp file.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstddef>
#include <cstring>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace ascend_attn_cpu {

// ----------------------------------------------------------------------------- CPU features
// Detected once at run time (cpuid + OS support); kernels pick an ISA-specific path from these.
struct CpuFeatures {
  bool avx2 = false;
  bool avx512f = false;
  bool avx512bf16 = false;
  bool avx512fp16 = false;
  bool amx_bf16 = false;
  bool amx_int8 = false;
};

const CpuFeatures& cpu_features();

// ----------------------------------------------------------------------------- memory
// Asks the kernel for transparent huge pages on a fresh, not yet touched output buffer (Linux,
// THP mode "madvise"): the first touch of a large output otherwise costs one page fault per 4 KiB,
// measured at 3x the time of writing the data on a VM. Only the 2 MiB-aligned interior is advised.
inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

// ----------------------------------------------------------------------------- rounding
inline float bits_to_float(uint32_t u) { float f; std::memcpy(&f, &u, 4); return f; }
inline uint32_t float_to_bits(float f) { uint32_t u; std::memcpy(&u, &f, 4); return u; }

// float32 -> bfloat16 bits, round to nearest even (the project's bf16 output rule); NaN stays NaN.
inline uint16_t float_to_bf16_rne(float f) {
  uint32_t u = float_to_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40u);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}
inline float bf16_to_float(uint16_t h) { return bits_to_float(static_cast<uint32_t>(h) << 16); }

// float16 bits -> float32 (exact).
inline float fp16_to_float(uint16_t h) {
  uint32_t sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bits_to_float(sign | 0x7f800000u | (man << 13));
  if (exp == 0) {
    if (man == 0) return bits_to_float(sign);
    float v = std::ldexp(static_cast<float>(man), -24);
    return sign ? -v : v;
  }
  return bits_to_float(sign | ((exp + 112) << 23) | (man << 13));
}

// float32 -> float16 bits, nearest, ties AWAY from zero (AscendC CAST_ROUND); overflow -> inf.
inline uint16_t float_to_fp16_half_away(float f) {
  uint32_t u = float_to_bits(f);
  uint16_t sign = static_cast<uint16_t>((u >> 16) & 0x8000u);
  uint32_t a = u & 0x7fffffffu;
  if (a > 0x7f800000u) return static_cast<uint16_t>(sign | 0x7e00u | ((a >> 13) & 0x3ffu));  // NaN
  if (a >= 0x477ff000u) return static_cast<uint16_t>(sign | 0x7c00u);  // >= 65520: inf (tie goes away)
  int exp = static_cast<int>(a >> 23) - 127;
  if (exp >= -14) {  // normal fp16: drop 13 mantissa bits, add half of the dropped unit
    uint32_t r = a + 0x1000u;  // ties away: +half ulp then truncate
    return static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu));
  }
  if (exp < -25) return sign;  // below half of the smallest subnormal
  // subnormal: value = man * 2^-24 with man < 1024
  uint32_t mant = (a & 0x7fffffu) | 0x800000u;
  int shift = -exp - 1;  // number of bits to drop so that the result counts units of 2^-24
  uint32_t half = 1u << (shift - 1);
  uint32_t q = (mant + half) >> shift;
  return static_cast<uint16_t>(sign | q);
}

}  // namespace ascend_attn_cpu
