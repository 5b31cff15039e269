// The choice of the CPU loops' instruction set (isa.h), once per process.
#include "isa.h"

#include <cstdlib>
#include <cstring>

namespace fastdstn {

Isa cpu_isa() {
#ifdef FASTDSTN_X86_LOOPS
  static const Isa isa = [] {
    __builtin_cpu_init();
    const bool avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const bool avx512 = avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
                        __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw");
    const char* cap = std::getenv("FASTDSTN_CPU_ISA");
    if (cap && std::strcmp(cap, "baseline") == 0) return Isa::baseline;
    if (cap && std::strcmp(cap, "avx2") == 0) return avx2 ? Isa::avx2 : Isa::baseline;
    return avx512 ? Isa::avx512 : avx2 ? Isa::avx2 : Isa::baseline;
  }();
  return isa;
#else
  return Isa::baseline;
#endif
}

const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

}  // namespace fastdstn
