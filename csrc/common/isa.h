// The CPU loops of every family are compiled three times: for the x86-64 baseline the extension is built for,
// with AVX2 + FMA, and with AVX-512 (F, DQ, VL, BW); the widest one the CPU supports is chosen once per process
// (FASTDSTN_CPU_ISA=baseline|avx2 caps the choice). Why: ATen picks a vectorized build of its own kernels per
// CPU at run time, while an extension is compiled for the baseline only (SSE2), which left our loops the slow
// part of a fused op. Measured with `python benchmarks/bench_cpu_env.py isa` (1 thread, minimum of 400 direct
// calls): the linear response backward without weight GEMMs at (128, 1024) 186–189 µs baseline, 134 µs AVX2
// and AVX-512; seeded dropout of 128 × 1200 values 440 µs baseline, 265 µs AVX2, 103 µs AVX-512 (its 64-bit
// multiplies are single instructions there).
//
// A family's <family>_ops.cpp makes the three copies of its <family>_cpu.h with isa_copies.h and calls into
// them with FASTDSTN_CPU_CALL.
#pragma once

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTDSTN_X86_LOOPS 1
#endif

namespace fastdstn {

enum class Isa { baseline, avx2, avx512 };

// The instruction set whose copy of the CPU loops runs (isa.cpp), and its name: "avx512", "avx2" or "baseline".
Isa cpu_isa();
const char* cpu_isa_name();

}  // namespace fastdstn

// return isa_<set>::fn(args...) for the set cpu_isa() chose.
#ifdef FASTDSTN_X86_LOOPS
#define FASTDSTN_CPU_CALL(fn, ...)                                      \
  switch (::fastdstn::cpu_isa()) {                                      \
    case ::fastdstn::Isa::avx512: return isa_avx512::fn(__VA_ARGS__);   \
    case ::fastdstn::Isa::avx2: return isa_avx2::fn(__VA_ARGS__);       \
    default: return isa_baseline::fn(__VA_ARGS__);                      \
  }
#else
#define FASTDSTN_CPU_CALL(fn, ...) return isa_baseline::fn(__VA_ARGS__);
#endif
