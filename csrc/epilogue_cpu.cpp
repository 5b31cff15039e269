// CPU loops of the STN ops (epilogue_cpu_loops.h), compiled three times: for the x86-64 baseline the
// extension is built for, with AVX2 + FMA, and with AVX-512 (F, DQ, VL, BW), the widest one the CPU
// supports chosen once per process (FASTDSTN_CPU_ISA=baseline|avx2 caps the choice). Why: ATen picks
// a vectorized build of its own kernels per CPU at run time, while an extension is compiled for the
// baseline only (SSE2), which left our loops the slow part of a fused op. Measured with
// `python benchmarks/bench_cpu_env.py isa` (1 thread, minimum of 400 direct calls): the linear response
// backward without weight GEMMs at (128, 1024) 186–189 µs baseline, 134 µs AVX2 and AVX-512; seeded
// dropout of 128 × 1200 values 440 µs baseline, 265 µs AVX2, 103 µs AVX-512 (its 64-bit multiplies are
// single instructions there).
//
// The other copies are compiled under `#pragma GCC target`, after every header is included: code
// defined there, and only that, may use the wider instructions (templates of ATen and the standard
// library keep the target of their definitions), so a CPU without them never runs one.
#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <vector>

#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>

#include "stn_ops.h"

namespace fastdstn {

namespace isa_baseline {
namespace {
#include "epilogue_cpu_loops.h"
}  // namespace
}  // namespace isa_baseline

#if defined(__x86_64__) && defined(__GNUC__)
#define FASTDSTN_X86_LOOPS 1
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
namespace {
#include "epilogue_cpu_loops.h"
}  // namespace
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512vl,avx512bw")
namespace isa_avx512 {
namespace {
#include "epilogue_cpu_loops.h"
}  // namespace
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

namespace {

enum class Isa { baseline, avx2, avx512 };

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

}  // namespace

#ifdef FASTDSTN_X86_LOOPS
#define FASTDSTN_CPU_CALL(fn, ...)                                                  \
  switch (cpu_isa()) {                                                              \
    case Isa::avx512: return isa_avx512::fn(__VA_ARGS__);                           \
    case Isa::avx2: return isa_avx2::fn(__VA_ARGS__);                               \
    default: return isa_baseline::fn(__VA_ARGS__);                                  \
  }
#else
#define FASTDSTN_CPU_CALL(fn, ...) return isa_baseline::fn(__VA_ARGS__);
#endif

const char* cpu_isa_name() {
  switch (cpu_isa()) {
    case Isa::avx512: return "avx512";
    case Isa::avx2: return "avx2";
    default: return "baseline";
  }
}

void dense_forward_cpu(const DenseForward& e) { FASTDSTN_CPU_CALL(dense_forward, e) }
void dense_backward_cpu(const DenseBackward& e) { FASTDSTN_CPU_CALL(dense_backward, e) }
void lstm_forward_cpu(const LstmForward& e) { FASTDSTN_CPU_CALL(lstm_forward, e) }
void lstm_backward_cpu(const LstmBackward& e) { FASTDSTN_CPU_CALL(lstm_backward, e) }
void dropout_cpu(const Dropout& e) { FASTDSTN_CPU_CALL(dropout, e) }

static void small_product_into(const at::Tensor& h, const at::Tensor& V, const at::Tensor& out) {
  FASTDSTN_CPU_CALL(small_product, h, V, out)
}

at::Tensor small_product_cpu(const at::Tensor& h, const at::Tensor& V) {
  const at::Tensor hc = h.contiguous();
  at::Tensor out = at::empty({h.size(0), V.size(0)}, h.options());
  if (h.size(1) == 0) return out.zero_();
  small_product_into(hc, V, out);
  return out;
}

}  // namespace fastdstn
