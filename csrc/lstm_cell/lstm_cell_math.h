// The formulas of the LSTM cell (gate order i, f, g, o) with the tangent pass of docs/METHOD.md §5, per
// element, written once for the CPU loops (lstm_cell_cpu.h) and the CUDA kernels (lstm_cell_cuda.cu).
// Transcendental functions (sigmoid, tanh) are applied by the caller, which knows its best implementation, so
// the formulas here are pure arithmetic; constants are written T(1), which vectors and scalars both accept.
#pragma once

#include "../common/math.h"

namespace fastdstn {
namespace math {

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

}  // namespace math
}  // namespace fastdstn
