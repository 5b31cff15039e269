// Pointwise math of the STN ops, written once for the CPU loops and the CUDA kernels.
//
// Every formula is a template over the value type T, so the CPU epilogues instantiate it with
// at::vec::Vectorized<scalar_t> (whole vectors) and the CUDA kernels with float/double (one element
// per thread). Constants are written T(1), which both kinds of T accept; transcendental functions
// (sigmoid, tanh) are applied by the caller, which knows its best implementation, so the formulas
// here are pure arithmetic. The CPU tests therefore exercise the very code the GPU runs.
#pragma once

#include <cstdint>

#if defined(__CUDACC__)
#define FD_HD __host__ __device__ __forceinline__
#else
#define FD_HD inline
#endif

namespace fastdstn {
namespace math {

// ---- STN dense layers (SPEC §3, §5); z_g = x·W_gᵀ, z_r = x·W_rᵀ, w = ẋ·W_gᵀ, [s | t] = h·Vᵀ ----

// Nonlinear STN layer: y = z_g + b_g + s ⊙ z_r + t ⊙ b_r.
template <class T>
FD_HD T stn_output(T zg, T bg, T s, T zr, T t, T br) {
  return zg + bg + s * zr + t * br;
}

// Dual layer, primal: y = z_g + b_g.
template <class T>
FD_HD T stn_primal(T zg, T bg) {
  return zg + bg;
}

// Dual layer, tangent: ẏ = ẋ·W_gᵀ + s ⊙ z_r + t ⊙ b_r.
template <class T>
FD_HD T stn_tangent(T w, T s, T zr, T t, T br) {
  return w + s * zr + t * br;
}

// Backward of either form, per element, with g the cotangent of the output that carries
// s ⊙ z_r + t ⊙ b_r (y for the nonlinear layer, ẏ for the dual):
//   cotangent of z_r (what the response GEMM/conv sees): s ⊙ g
//   contribution to ∂s: g ⊙ z_r        contribution to ∂t (and, times t, to ∂b_r): g
template <class T>
FD_HD T stn_response_cotangent(T s, T g) {
  return s * g;
}

template <class T>
FD_HD T stn_scale_grad(T g, T zr) {
  return g * zr;
}

// ---- LSTM cell (order i, f, g, o), with the tangent pass of SPEC §5 ----
// Arguments are the activated gates i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o), the old
// cell c, tanh of the new cell tc, and the tangents of the pre-activations (ȧ_*) and of c (ċ);
// absent tangents are passed as zero.

template <class T>
FD_HD T lstm_cell(T i, T f, T g, T c) {
  return f * c + i * g;
}

// ċ' = f ċ + σ'(a_f) ȧ_f c + σ'(a_i) ȧ_i g + i tanh'(a_g) ȧ_g
template <class T>
FD_HD T lstm_cell_tangent(T i, T f, T g, T c, T ait, T aft, T agt, T ct) {
  const T one(1);
  return f * ct + (f * (one - f) * aft) * c + (i * (one - i) * ait) * g + i * ((one - g * g) * agt);
}

// ḣ' = σ'(a_o) ȧ_o tc + o (1 − tc²) ċ'
template <class T>
FD_HD T lstm_hidden_tangent(T o, T tc, T aot, T cnt) {
  const T one(1);
  return (o * (one - o) * aot) * tc + o * ((one - tc * tc) * cnt);
}

// Backward of (h', ḣ', c', ċ') with cotangents gh, ght, gc, gct (zero where absent).
// Outputs: cotangents of the pre-activations (da_*), of their tangents (dat_*), of c and of ċ.
template <class T>
struct LstmGrads {
  T dai, daf, dag, dao, dait, daft, dagt, daot, dc, dct;
};

template <class T>
FD_HD LstmGrads<T> lstm_backward(T i, T f, T g, T o, T c, T tc, T ait, T aft, T agt, T aot, T ct, T gh, T ght,
                                 T gc, T gct) {
  const T one(1), two(2);
  const T si = i * (one - i), sf = f * (one - f), so = o * (one - o), tg = one - g * g;
  const T di = si * ait, df = sf * aft, dg = tg * agt, dO = so * aot;
  const T cnt = f * ct + df * c + di * g + i * dg;  // ċ'
  const T tc2 = one - tc * tc;
  // ḣ' = dO·tc + o·tc2·ċ' and h' = o·tc
  const T g_dO = ght * tc;
  const T g_tc = ght * (dO - two * o * tc * cnt) + gh * o;
  T g_o = ght * tc2 * cnt + gh * tc;
  const T g_cnt = gct + ght * o * tc2;
  const T g_cn = gc + g_tc * tc2;
  // ċ' = f ċ + df c + di g + i dg and c' = f c + i g
  T g_f = g_cnt * ct + g_cn * c;
  T g_g = g_cnt * di + g_cn * i;
  T g_i = g_cnt * dg + g_cn * g;
  const T g_df = g_cnt * c, g_di = g_cnt * g, g_dg = g_cnt * i;
  LstmGrads<T> r;
  r.dct = g_cnt * f;
  r.dc = g_cnt * df + g_cn * f;
  // tangents of the activations: d* = act'(a)·ȧ, whose derivative in the activation is act''/act'
  r.dait = g_di * si;
  r.daft = g_df * sf;
  r.dagt = g_dg * tg;
  r.daot = g_dO * so;
  g_i = g_i + g_di * ait * (one - two * i);
  g_f = g_f + g_df * aft * (one - two * f);
  g_g = g_g - g_dg * agt * two * g;
  g_o = g_o + g_dO * aot * (one - two * o);
  r.dai = g_i * si;
  r.daf = g_f * sf;
  r.dag = g_g * tg;
  r.dao = g_o * so;
  return r;
}

// ---- Dropout: a counter-based generator, so a mask element is a pure function of (seed, index) ----
// splitmix64's output function at position `index` of the stream started by `seed`: the CPU and the
// CUDA code draw identical masks, and the backward regenerates the forward's mask from the seed.

FD_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Seed scrambled once on the host, so that nearby seeds give unrelated streams.
FD_HD uint64_t dropout_stream(int64_t seed) {
  return mix64(static_cast<uint64_t>(seed) + 0x632BE59BD9B4E019ull);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float and double).
FD_HD float uniform01(uint64_t stream, uint64_t index) {
  const uint64_t r = mix64(stream + (index + 1) * 0x9E3779B97F4A7C15ull);
  // through uint32 (the value is below 2^24): a 32-bit integer conversion vectorizes on AVX2
  return static_cast<float>(static_cast<uint32_t>(r >> 40)) * (1.0f / 16777216.0f);
}

// Scaled keep-mask value of one draw: 1/(1 − p) with probability 1 − p, else 0.
template <class T>
FD_HD T dropout_scale(float u, double p, T keep_scale) {
  return u >= p ? keep_scale : T(0);
}

}  // namespace math
}  // namespace fastdstn
