// The formulas of the LSTM cell (gate order i, f, g, o) with the tangent pass of docs/METHOD.md §5, per
// element, written once for the CPU loops (lstm_cell_cpu.h) and the CUDA kernels (lstm_cell_cuda.cu).
// Transcendental functions (sigmoid, tanh) are applied by the caller, which knows its best implementation, so
// the formulas here are pure arithmetic; constants are written T(1), which vectors and scalars both accept.
#pragma once

#include "../common/math.h"

namespace fastdstn {
namespace math {

// Arguments are the activated gates i = σ(a_i), f = σ(a_f), g = tanh(a_g), o = σ(a_o), the old
// cell c, tanh of the new cell tanh_c, and the tangents of the pre-activations (ȧ_*) and of c (ċ);
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

// ḣ' = σ'(a_o) ȧ_o tanh_c + o (1 − tanh_c²) ċ'
template <class T>
FD_HD T lstm_hidden_tangent(T o, T tanh_c, T aot, T cnt) {
  const T one(1);
  return (o * (one - o) * aot) * tanh_c + o * ((one - tanh_c * tanh_c) * cnt);
}

// Backward of (h', ḣ', c', ċ') with cotangents gh, ght, gc, gct (zero where absent).
// Outputs: cotangents of the pre-activations (da_*), of their tangents (dat_*), of c and of ċ.
template <class T>
struct LstmGrads {
  T dai, daf, dag, dao, dait, daft, dagt, daot, dc, dct;
};

template <class T>
FD_HD LstmGrads<T> lstm_backward(T i, T f, T g, T o, T c, T tanh_c, T ait, T aft, T agt, T aot, T ct, T gh, T ght,
                                 T gc, T gct) {
  const T one(1), two(2);
  const T si = i * (one - i), sf = f * (one - f), so = o * (one - o), tanh_prime_g = one - g * g;
  const T di = si * ait, df = sf * aft, dg = tanh_prime_g * agt, dO = so * aot;
  const T cnt = f * ct + df * c + di * g + i * dg;  // ċ'
  const T tanh_prime_c = one - tanh_c * tanh_c;
  // ḣ' = dO·tanh_c + o·tanh_prime_c·ċ' and h' = o·tanh_c
  const T g_dO = ght * tanh_c;
  const T g_tanh_c = ght * (dO - two * o * tanh_c * cnt) + gh * o;
  T g_o = ght * tanh_prime_c * cnt + gh * tanh_c;
  const T g_cnt = gct + ght * o * tanh_prime_c;
  const T g_cn = gc + g_tanh_c * tanh_prime_c;
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
  r.dagt = g_dg * tanh_prime_g;
  r.daot = g_dO * so;
  g_i = g_i + g_di * ait * (one - two * i);
  g_f = g_f + g_df * aft * (one - two * f);
  g_g = g_g - g_dg * agt * two * g;
  g_o = g_o + g_dO * aot * (one - two * o);
  r.dai = g_i * si;
  r.daf = g_f * sf;
  r.dag = g_g * tanh_prime_g;
  r.dao = g_o * so;
  return r;
}

}  // namespace math
}  // namespace fastdstn
