// The weight GEMMs of the linear ops on CPU when the batch is small: a register-tiled AVX-512 kernel
// that reads both operands where they lie, instead of ATen's MKL sgemm.
//
// Why: at (B, in, out) = (32, 256, 256) MKL spends a large share of each product packing the 256 KB
// weight into its panel layout (mkl_blas_def_sgemm_scopy_*, ~12% of the fused op's samples under perf)
// and runs its Zen kernel at 82-88 GFLOP/s. With a batch of a few dozen rows, broadcasting one matrix's
// scalars against 16-wide rows of the other needs no packing, and the tiles below run at about one 16-wide
// FMA per cycle. `python benchmarks/bench_cpu_env.py gemm --quick` (batch 32, 256 → 256, 1 thread, minimum of
// calls, ATen → kernel): the forward's three products 146 → 117 µs, ∂ẋ = ∂ẏ·W_g 48 → 38, ∂W_r = aᵀ·x 49 → 41;
// the Δ-STN response step of that layer went from 1.25-1.32x to 1.48-1.63x faster than the reference
// backend at 1 thread, 1.72-1.93x at 2 (`python benchmarks/bench_ops_cpp.py`, benchmarks/history/ops_cpp.md).
//
// One kernel, out(i, j) = Σ_l A(i, l)·Bm(l, j), up to three products per tile, serves the dense ops:
//   x·Wᵀ   computed as its transpose W·xᵀ (A = W, Bm = xᵀ): the weight is read in its own layout, only
//          the small xᵀ is transposed in, and the (C × B) results are transposed out;
//   g·W    A = g, Bm = W;
//   aᵀ·x   A = aᵀ (a strided view), Bm = x.
// Only compiled for x86-64 with GCC/Clang (the AVX-512 copy sits under `#pragma GCC target`, after
// every header, like the CPU loops of common/isa_copies.h); elsewhere, on CPUs without AVX-512, with
// FASTDSTN_CPU_ISA capping the loops below AVX-512 or with FASTDSTN_SMALL_GEMM=0, the products are ATen's.
#include <algorithm>
#include <array>
#include <cstdlib>
#include <initializer_list>
#include <cstring>

#include <ATen/Parallel.h>

#include "../common/isa.h"
#include "../common/ops.h"
#include "dense_ops.h"

#ifdef FASTDSTN_X86_LOOPS
#include <immintrin.h>
#endif

namespace fastdstn {

#ifdef FASTDSTN_X86_LOOPS
#define FASTDSTN_SMALL_GEMM_KERNEL 1
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512dq,avx512vl,avx512bw")
namespace isa_avx512 {
namespace {

// 64-byte vectors of float or double and the operations the kernel needs, by overload.
template <class S>
struct Wide;
template <>
struct Wide<float> {
  using V = __m512;
  using Mask = __mmask16;
  static V zero() { return _mm512_setzero_ps(); }
  static V broadcast(float s) { return _mm512_set1_ps(s); }
  static V load(const float* p, Mask m) { return _mm512_maskz_loadu_ps(m, p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
  static void store(float* p, V v, Mask m) { _mm512_mask_storeu_ps(p, m, v); }
  using Index = __m512i;
  using IndexLane = int32_t;
  static Index load_index(const int32_t* p) { return _mm512_load_si512(p); }
  static V permute2(V a, Index idx, V b) { return _mm512_permutex2var_ps(a, idx, b); }
};
template <>
struct Wide<double> {
  using V = __m512d;
  using Mask = __mmask8;
  static V zero() { return _mm512_setzero_pd(); }
  static V broadcast(double s) { return _mm512_set1_pd(s); }
  static V load(const double* p, Mask m) { return _mm512_maskz_loadu_pd(m, p); }
  static V fma(V a, V b, V c) { return _mm512_fmadd_pd(a, b, c); }
  static void store(double* p, V v, Mask m) { _mm512_mask_storeu_pd(p, m, v); }
  using Index = __m512i;
  using IndexLane = int64_t;
  static Index load_index(const int64_t* p) { return _mm512_load_si512(p); }
  static V permute2(V a, Index idx, V b) { return _mm512_permutex2var_pd(a, idx, b); }
};

template <class S>
constexpr int64_t kLanes = 64 / sizeof(S);

template <class S>
typename Wide<S>::Mask lanes_mask(int64_t n) {
  using Mask = typename Wide<S>::Mask;
  return n >= kLanes<S> ? Mask(~Mask(0)) : Mask((Mask(1) << n) - 1);
}

// Up to three products of one shape that share operands, tile by tile:
//   out[0](i, j) = Σ_{l < L} A0(i, l)·B0(l, j)      always
//   out[1](i, j) = Σ_{l < L} A1(i, l)·B0(l, j)      NP ≥ 2 (x·W_rᵀ beside x·W_gᵀ)
//   out[2](i, j) = Σ_{l < L} A0(i, l)·B1(l, j)      NP = 3 (ẋ·W_gᵀ)
// for i < I, j < J, with Ap(i, l) = a[p][i·a_si[p] + l·a_sl[p]], Bp(l, j) = b[p][l·ldb[p] + j] (rows of Bp
// are read up to J, masked, so they need no padding) and out[p](i, j) stored at out[p][i·ldo + j].
// Sharing a tile, the products share each load of B0 and each broadcast of A0.
template <class S>
struct Gemm {
  int64_t I, J, L;
  const S* a[2];
  int64_t a_si[2], a_sl[2];
  const S* b[2];
  int64_t ldb[2];
  S* out[3];
  int64_t ldo;
  bool accumulate;  // out[0] += A0·B0 (NP = 1)
};

// One IR × (JV·lanes) tile of each product, with all of L accumulated in registers. AVX-512 has 32
// vector registers; NP·IR·JV ≤ 24 accumulators leaves room for the loads of B and the broadcasts.
template <class S, int NP, int IR, int JV>
void tile(const Gemm<S>& g, int64_t i0, int64_t j0) {
  using W = Wide<S>;
  using V = typename W::V;
  typename W::Mask mask[JV];
#pragma GCC unroll 4
  for (int v = 0; v < JV; ++v) mask[v] = lanes_mask<S>(std::max<int64_t>(0, g.J - j0 - v * kLanes<S>));
  V acc[NP][IR][JV];
#pragma GCC unroll 3
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 24
    for (int i = 0; i < IR; ++i)
#pragma GCC unroll 4
      for (int v = 0; v < JV; ++v)
        acc[p][i][v] = g.accumulate ? W::load(g.out[0] + (i0 + i) * g.ldo + j0 + v * kLanes<S>, mask[v]) : W::zero();
  const S* a0 = g.a[0] + i0 * g.a_si[0];
  const S* a1 = NP > 1 ? g.a[1] + i0 * g.a_si[1] : nullptr;
  const S* b0 = g.b[0] + j0;
  const S* b1 = NP > 2 ? g.b[1] + j0 : nullptr;
  for (int64_t l = 0; l < g.L; ++l) {
    V row0[JV], row1[JV];
#pragma GCC unroll 4
    for (int v = 0; v < JV; ++v) {
      row0[v] = W::load(b0 + v * kLanes<S>, mask[v]);
      if (NP > 2) row1[v] = W::load(b1 + v * kLanes<S>, mask[v]);
    }
#pragma GCC unroll 24
    for (int i = 0; i < IR; ++i) {
      const V s0 = W::broadcast(a0[i * g.a_si[0]]);
#pragma GCC unroll 4
      for (int v = 0; v < JV; ++v) {
        acc[0][i][v] = W::fma(s0, row0[v], acc[0][i][v]);
        if (NP > 2) acc[NP - 1][i][v] = W::fma(s0, row1[v], acc[NP - 1][i][v]);
      }
      if (NP > 1) {
        const V s1 = W::broadcast(a1[i * g.a_si[1]]);
#pragma GCC unroll 4
        for (int v = 0; v < JV; ++v) acc[1][i][v] = W::fma(s1, row0[v], acc[1][i][v]);
      }
    }
    a0 += g.a_sl[0];
    if (NP > 1) a1 += g.a_sl[1];
    b0 += g.ldb[0];
    if (NP > 2) b1 += g.ldb[1];
  }
#pragma GCC unroll 3
  for (int p = 0; p < NP; ++p)
#pragma GCC unroll 24
    for (int i = 0; i < IR; ++i) {
      S* o = g.out[p] + (i0 + i) * g.ldo + j0;
#pragma GCC unroll 4
      for (int v = 0; v < JV; ++v) W::store(o + v * kLanes<S>, acc[p][i][v], mask[v]);
    }
}

// Rows [i_begin, i_end) of out: full IR-row tiles, then the remaining rows one at a time.
template <class S, int NP, int IR, int JV>
void rows(const Gemm<S>& g, int64_t i_begin, int64_t i_end) {
  constexpr int64_t width = JV * kLanes<S>;
  int64_t i = i_begin;
  for (; i + IR <= i_end; i += IR)
    for (int64_t j = 0; j < g.J; j += width) tile<S, NP, IR, JV>(g, i, j);
  for (; i < i_end; ++i)
    for (int64_t j = 0; j < g.J; j += width) tile<S, NP, 1, JV>(g, i, j);
}

// xT (K × B, row-major) = x (B × K, any strides). Whole 16 × 16 (float) or 8 × 8 (double) blocks go through
// registers: ATen's x.t().contiguous() and a scalar loop each cost a sizeable fraction of the product they
// feed (numbers in benchmarks/history/ops_cpp.md). Block transpose: for d = 1, 2, 4, 8, rows i and i + d
// (bit d of i clear) exchange the elements whose column has bit d set in row i and clear in row i + d, i.e.
// every element (r, c) with bit d of r and c different moves to (r ^ d, c ^ d); after all d it sits at (c, r).
template <class S, int d>
struct TransposeStage {
  using W = Wide<S>;
  static constexpr int n = kLanes<S>;
  // Lane j of the new rows i and i + d, as an index into the pair (row i | row i + d).
  static constexpr std::array<typename W::IndexLane, 2 * n> indices() {
    std::array<typename W::IndexLane, 2 * n> idx{};
    for (int j = 0; j < n; ++j) {
      idx[j] = (j & d) ? n + j - d : j;
      idx[n + j] = (j & d) ? n + j : j + d;
    }
    return idx;
  }
  alignas(64) static constexpr std::array<typename W::IndexLane, 2 * n> kIndices = indices();

  static void apply(typename W::V* r) {
    const typename W::Index low = W::load_index(kIndices.data()), high = W::load_index(kIndices.data() + n);
#pragma GCC unroll 16
    for (int i = 0; i < n; ++i) {
      if (i & d) continue;
      const typename W::V a = r[i], b = r[i + d];
      r[i] = W::permute2(a, low, b);
      r[i + d] = W::permute2(a, high, b);
    }
  }
};

template <class S>
void transpose_block(const S* x, int64_t sb, S* xT, int64_t ldt) {
  using W = Wide<S>;
  constexpr int n = kLanes<S>;
  typename W::V r[n];
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) r[i] = W::load(x + i * sb, lanes_mask<S>(n));
  TransposeStage<S, 1>::apply(r);
  TransposeStage<S, 2>::apply(r);
  TransposeStage<S, 4>::apply(r);
  if constexpr (n == 16) TransposeStage<S, 8>::apply(r);
#pragma GCC unroll 16
  for (int i = 0; i < n; ++i) W::store(xT + i * ldt, r[i], lanes_mask<S>(n));
}

template <class S>
void transpose_into(const S* x, int64_t B, int64_t K, int64_t sb, int64_t sk, S* xT) {
  constexpr int64_t n = kLanes<S>;
  const int64_t B_full = sk == 1 ? B - B % n : 0, K_full = sk == 1 ? K - K % n : 0;
  for (int64_t b0 = 0; b0 < B_full; b0 += n)
    for (int64_t k0 = 0; k0 < K_full; k0 += n) transpose_block(x + b0 * sb + k0, sb, xT + k0 * B + b0, B);
  // the edges (all of it when rows of x are strided): element by element
  for (int64_t b = 0; b < B; ++b)
    for (int64_t k = (b < B_full ? K_full : 0); k < K; ++k) xT[k * B + b] = x[b * sb + k * sk];
}

// Multiply-adds per parallel task (~10 µs at one 16-wide FMA per cycle): below this, threads cost more
// than they save. With 2^18 the 10-output layer's forward at batch 32 (1.15 M multiply-adds in 3 row
// blocks) ran on 2 threads at 0.71-0.99x MKL's time against 2.3-2.6x on one.
constexpr int64_t kGrainMultiplyAdds = 1 << 20;

template <class S, int NP, int JV>
void run_tiles(const Gemm<S>& g) {
  // 4 × 4 rather than 6 × 4 for one product: at the usual batch of 32, 6-row tiles would leave 2 rows to
  // single-row tiles.
  constexpr int IR = NP == 1 && JV == 4 ? 4 : 24 / (NP * JV);
  const int64_t blocks = (g.I + IR - 1) / IR;
  const int64_t block_work = std::max<int64_t>(1, NP * IR * g.J * g.L);
  const int64_t grain = (kGrainMultiplyAdds + block_work - 1) / block_work;
  at::parallel_for(0, blocks, grain, [&](int64_t b0, int64_t b1) {
    rows<S, NP, IR, JV>(g, b0 * IR, std::min(g.I, b1 * IR));
  });
}

// The tile width by the width of out's rows: four vectors where they fill it, else two, else one.
template <class S, int NP>
void gemm(const Gemm<S>& g) {
  if (g.J > 2 * kLanes<S>) {
    run_tiles<S, NP, 4>(g);
  } else if (g.J > kLanes<S>) {
    run_tiles<S, NP, 2>(g);
  } else {
    run_tiles<S, NP, 1>(g);
  }
}

}  // namespace
}  // namespace isa_avx512
#pragma GCC pop_options
#endif

namespace {

// FASTDSTN_SMALL_GEMM: 0 turns the kernel off; "any" lets it take every floating product whatever
// its size (for `bench_cpu_env.py gemm`, which measures it beyond the limits below); unset, the limits hold.
enum class Mode { off, limited, any };

Mode mode() {
#ifdef FASTDSTN_SMALL_GEMM_KERNEL
  static const Mode m = [] {
    const char* flag = std::getenv("FASTDSTN_SMALL_GEMM");
    if (cpu_isa() != Isa::avx512 || (flag && std::strcmp(flag, "0") == 0)) return Mode::off;
    return flag && std::strcmp(flag, "any") == 0 ? Mode::any : Mode::limited;
  }();
  return m;
#else
  return Mode::off;
#endif
}

}  // namespace

bool small_gemm_enabled() { return mode() != Mode::off; }

#ifdef FASTDSTN_SMALL_GEMM_KERNEL
namespace {

// Which products the kernel takes: floating CPU tensors with a dimension of at most kMaxBatch: the batch
// of the forward; for the backward products the batch or the layer's width (a 10-way output layer's ∂x and
// ∂W take it at any batch, which the table's 10-output rows measure).
// `python benchmarks/bench_cpu_env.py gemm` (ATen's time / the kernel's for the same op calls, 1 and 2
// threads, batches 8-256, weights 10 × 1200 to 1024 × 1024; table in benchmarks/history/ops_cpp.md), at
// batches ≤ 64: ∂ẋ = g·W 1.15-3.0x, ∂W = aᵀ·x 1.00-2.5x, the forward's three products 0.87-2.6x (3 of 24
// below 1: batch 8 at 1 thread, the 10-output layer at batch 64 on 2 threads). At 128 and 256 rows the
// forward fell below 1 in 9 of 16 cases (to 0.87x): MKL's packing pays back there. The operand every tile
// re-reads (W for g·W, xᵀ or x otherwise) was at most 1024 × 1024, which kMaxRereadElements keeps.
constexpr int64_t kMaxBatch = 64;
constexpr int64_t kMaxRereadElements = 1 << 20;

bool takes(std::initializer_list<const Tensor*> operands, int64_t batch, int64_t reread) {
  const Mode m = mode();
  const auto dtype = (*operands.begin())->scalar_type();
  if (m == Mode::off || (dtype != at::kFloat && dtype != at::kDouble) || batch <= 0) return false;
  for (const Tensor* t : operands) {
    if (t->scalar_type() != dtype || !t->is_cpu()) return false;  // ATen raises its own error for these
  }
  return m == Mode::any || (batch <= kMaxBatch && reread <= kMaxRereadElements);
}

}  // namespace
#endif

Tensor dense_mm(const Tensor& a, const Tensor& b, const Tensor& add_to) {
#ifdef FASTDSTN_SMALL_GEMM_KERNEL
  const int64_t I = a.size(0), J = b.size(1), L = a.size(1);
  // g·W (the batch is I, the layer's width L) re-reads W; aᵀ·x (a weight gradient: the width is I, the batch
  // L) re-reads x.
  if (J > 0 && takes({&a, &b}, std::min(I, L), b.numel()) && (!add_to.defined() || add_to.is_contiguous())) {
    const Tensor bc = b.stride(1) == 1 ? b : b.contiguous();
    Tensor out = add_to.defined() ? add_to : at::empty({I, J}, a.options());
    AT_DISPATCH_FLOATING_TYPES(a.scalar_type(), "dense_mm", [&] {
      using S = scalar_t;
      isa_avx512::gemm<S, 1>({I, J, L, {a.const_data_ptr<S>()}, {a.stride(0)}, {a.stride(1)}, {bc.const_data_ptr<S>()},
                              {bc.stride(0)}, {out.mutable_data_ptr<S>()}, J, add_to.defined()});
    });
    return out;
  }
#endif
  return add_to.defined() ? add_to.addmm_(a, b) : at::mm(a, b);
}

T3 linear_products(const Tensor& x, const OptTensor& xt, const Tensor& Wg, const Tensor& Wr) {
  const bool tangent = xt.has_value() && xt->defined();
#ifdef FASTDSTN_SMALL_GEMM_KERNEL
  const int64_t B = x.size(0), C = Wg.size(0), K = Wg.size(1);
  if (C > 0 && K > 0 && takes({&x, tangent ? &*xt : &x, &Wg, &Wr}, B, K * B)) {
    // The transposed products W·xᵀ (C × B), so that the weights are read in their own layout (each
    // element once: B ≤ 64 fits one tile); the small xᵀ goes in, and the outputs come out, through block
    // transposes (writing the output tiles back transposed lane by lane was slower: benchmarks/history/ops_cpp.md).
    const int64_t n_in = tangent ? 2 : 1, n_out = tangent ? 3 : 2;
    const Tensor scratch = at::empty({n_in * K * B + n_out * C * B}, x.options());
    Tensor y = at::empty({B, C}, x.options()), u = at::empty({B, C}, x.options());
    Tensor yt = tangent ? at::empty({B, C}, x.options()) : Tensor();
    AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "linear_products", [&] {
      using S = scalar_t;
      S* xT = scratch.mutable_data_ptr<S>();
      S* xtT = xT + K * B;
      S* outT = xT + n_in * K * B;  // yᵀ, uᵀ, ẏᵀ
      isa_avx512::transpose_into(x.const_data_ptr<S>(), B, K, x.stride(0), x.stride(1), xT);
      if (tangent) isa_avx512::transpose_into(xt->const_data_ptr<S>(), B, K, xt->stride(0), xt->stride(1), xtT);
      const isa_avx512::Gemm<S> g{C, B, K, {Wg.const_data_ptr<S>(), Wr.const_data_ptr<S>()},
                                  {Wg.stride(0), Wr.stride(0)}, {Wg.stride(1), Wr.stride(1)}, {xT, xtT}, {B, B},
                                  {outT, outT + C * B, outT + 2 * C * B}, B, false};
      if (tangent) {
        isa_avx512::gemm<S, 3>(g);
      } else {
        isa_avx512::gemm<S, 2>(g);
      }
      const Tensor outs[3] = {y, u, yt};
      for (int64_t p = 0; p < n_out; ++p)
        isa_avx512::transpose_into(outT + p * C * B, C, B, B, 1, outs[p].mutable_data_ptr<S>());
    });
    return {y, u, yt};
  }
#endif
  return {at::mm(x, Wg.t()), at::mm(x, Wr.t()), tangent ? at::mm(*xt, Wg.t()) : Tensor()};
}

}  // namespace fastdstn
