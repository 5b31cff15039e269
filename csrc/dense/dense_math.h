// The formulas of the STN dense layers (docs/METHOD.md §3, §5), per element, written once for the CPU loops
// (dense_cpu.h) and the CUDA kernels (dense_cuda.cu). z_g = x·W_gᵀ, z_r = x·W_rᵀ (or the convolutions),
// w = ẋ·W_gᵀ, [s | t] = h·Vᵀ.
#pragma once

#include "../common/math.h"

namespace fastdstn {
namespace math {

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

}  // namespace math
}  // namespace fastdstn
