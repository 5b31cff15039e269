// Three copies of a family's CPU loops: `#define FASTDSTN_CPU_LOOPS "<family>_cpu.h"`, then include this file
// once, after every other header of the translation unit (in namespace fastdstn). The copies land in
// namespaces isa_baseline, isa_avx2 and isa_avx512, each with its own copy of cpu_loops.h's helpers and the
// constant kLoopIsa, the instruction set that copy is compiled for (for a loop whose best form differs by set).
//
// The wider copies are compiled under `#pragma GCC target`, after every header is included: code defined
// there, and only that, may use the wider instructions (templates of ATen and the standard library keep the
// target of their definitions), so a CPU without them never runs one.
// No include guard: a translation unit includes it once, for its family.
#ifndef FASTDSTN_CPU_LOOPS
#error "define FASTDSTN_CPU_LOOPS as the family's loops header before including common/isa_copies.h"
#endif

namespace isa_baseline {
namespace {
constexpr Isa kLoopIsa = Isa::baseline;
#include "cpu_loops.h"
#include FASTDSTN_CPU_LOOPS
}  // namespace
}  // namespace isa_baseline

#ifdef FASTDSTN_X86_LOOPS
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace isa_avx2 {
namespace {
constexpr Isa kLoopIsa = Isa::avx2;
#include "cpu_loops.h"
#include FASTDSTN_CPU_LOOPS
}  // namespace
}  // namespace isa_avx2
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512vl,avx512bw")
namespace isa_avx512 {
namespace {
constexpr Isa kLoopIsa = Isa::avx512;
#include "cpu_loops.h"
#include FASTDSTN_CPU_LOOPS
}  // namespace
}  // namespace isa_avx512
#pragma GCC pop_options
#endif
