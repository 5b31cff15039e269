// The pooling family's C++ declarations: max pooling with the tangent at each window's argmax (Δ-STN's dual pass,
// docs/METHOD.md §5c) or without it (plain pooling, fastdstn.nn.MaxPool2d), its adjoint, and the descriptions the
// ops hand to the CPU loops (pooling_cpu.h). CPU only: on CUDA the reference's ATen kernels run
// (fastdstn/ops/pooling/cpp.py).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../common/ops.h"

namespace fastdstn {

// The window geometry of a 2-D max pooling, ATen's conventions: window (kh, kw) every (sh, sw) over the input
// padded by (ph, pw) with -inf, its taps (dh, dw) apart; out_h × out_w windows per plane of in_h × in_w.
struct PoolGeometry {
  int64_t kh = 1, kw = 1, sh = 1, sw = 1, ph = 0, pw = 0, dh = 1, dw = 1;
  int64_t in_h = 0, in_w = 0, out_h = 0, out_w = 0;
};

// For each of `planes` contiguous (in_h, in_w) planes of x and ẋ: y = each window's maximum, ẏ = ẋ at its index
// (h·in_w + w within the plane) and that index, all (planes, out_h, out_w). Without ẋ (xt null), y and the indices.
struct MaxPoolDual {
  at::ScalarType dtype;
  int64_t planes = 0;
  PoolGeometry geo;
  const void *x = nullptr, *xt = nullptr;
  void *y = nullptr, *yt = nullptr;
  int64_t* indices = nullptr;
};

// The adjoint of ẏ = ẋ[indices]: for each plane, grad_x = 0 plus grad_y scattered onto `indices`. `bad` counts the
// indices outside [0, in_h·in_w), which are skipped; the op body refuses the result when any was.
struct MaxPoolDualBackward {
  at::ScalarType dtype;
  int64_t planes = 0, in_plane = 0, out_plane = 0;
  const void* grad_y = nullptr;
  const int64_t* indices = nullptr;
  void* grad_x = nullptr;
  int64_t* bad = nullptr;
};

// The CPU loops (pooling_cpu.h, through pooling_ops.cpp).
void max_pool_dual_cpu(const MaxPoolDual& e);
void max_pool_dual_backward_cpu(const MaxPoolDualBackward& e);

// The op bodies (pooling_ops.cpp); their schemas at the end of pooling_ops.cpp.
T3 max_pool2d_dual(const Tensor& x, const OptTensor& xt, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode);
Tensor max_pool2d_dual_backward(const Tensor& grad_yt, const Tensor& indices, at::IntArrayRef input_size);

}  // namespace fastdstn
