// Run-time CPU feature detection for the native kernels (one library serves every x86-64 CPU:
// ISA-specific code sits behind target attributes and is chosen from these flags).
#include <torch/library.h>

#include <cstdlib>
#include <string>
#include <vector>

#include "common.h"

#if defined(__x86_64__)
#include <cpuid.h>
#include <sys/syscall.h>
#include <unistd.h>
#endif

namespace ascend_attn_cpu {
namespace {

#if defined(__x86_64__)
// Linux keeps AMX tile data off until a process asks for it (arch_prctl ARCH_REQ_XCOMP_PERM).
bool request_amx_permission() {
  constexpr long kArchReqXcompPerm = 0x1023;
  constexpr long kXfeatureXtiledata = 18;
  return syscall(SYS_arch_prctl, kArchReqXcompPerm, kXfeatureXtiledata) == 0;
}
#endif

CpuFeatures detect() {
  CpuFeatures f;
  // ASCEND_ATTN_CPU_ISA=scalar: run the portable code paths (tests compare them with the SIMD ones).
  const char* isa = std::getenv("ASCEND_ATTN_CPU_ISA");
  if (isa && std::string(isa) == "scalar") return f;
#if defined(__x86_64__)
  __builtin_cpu_init();
  // the AVX2 code paths also convert fp16 with F16C (every AVX2 CPU has it; checked all the same)
  f.avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
  f.avx512f = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
              __builtin_cpu_supports("avx512vl");
  f.avx512bf16 = f.avx512f && __builtin_cpu_supports("avx512bf16");
  f.avx512fp16 = f.avx512f && __builtin_cpu_supports("avx512fp16");
  unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
  if (__get_cpuid_count(7, 0, &eax, &ebx, &ecx, &edx)) {
    bool tile = (edx >> 24) & 1u;
    if (tile && f.avx512f && request_amx_permission()) {
      f.amx_bf16 = (edx >> 22) & 1u;
      f.amx_int8 = (edx >> 25) & 1u;
    }
  }
#endif
  return f;
}

std::vector<int64_t> cpu_features_op() {
  const CpuFeatures& f = cpu_features();
  return {f.avx2, f.avx512f, f.avx512bf16, f.avx512fp16, f.amx_bf16, f.amx_int8};
}

}  // namespace

const CpuFeatures& cpu_features() {
  static const CpuFeatures features = detect();
  return features;
}

}  // namespace ascend_attn_cpu

TORCH_LIBRARY_FRAGMENT(ascend_attn_cpu, m) {
  m.def("cpu_features() -> int[]", &ascend_attn_cpu::cpu_features_op);
}
