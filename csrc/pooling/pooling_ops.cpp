// Max pooling with its tangent: the schemas of max_pool2d_dual and max_pool2d_dual_backward, their op bodies (checks
// and allocation here, the CPU loops in pooling_cpu.h) and their registration for the CPU key. Their autograd is
// fastdstn/nn/pooling.py's, in Python: one Function, differentiable w.r.t. x (plain pooling) or, at a frozen primal
// (Δ-STN's dual pass), w.r.t. ẋ; both gradients are the same scatter.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/native/Pool.h>
#include <torch/library.h>

#include <algorithm>
#include <atomic>
#include <limits>
#include <vector>

#include "../common/isa.h"
#include "../common/ops.h"
#include "pooling_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../pooling/pooling_cpu.h"
#include "../common/isa_copies.h"

void max_pool_dual_cpu(const MaxPoolDual& e) { FASTDSTN_CPU_CALL(max_pool_dual, e) }
void max_pool_dual_backward_cpu(const MaxPoolDualBackward& e) { FASTDSTN_CPU_CALL(max_pool_dual_backward, e) }

namespace {

// One of the geometry's (h, w) pairs: two values, each at least `low`.
std::pair<int64_t, int64_t> pair_at_least(const char* op, const char* name, at::IntArrayRef v, int64_t low) {
  TORCH_CHECK(v.size() == 2 && v[0] >= low && v[1] >= low, op, ": ", name, ": expected 2 values of at least ", low,
              ", received ", v);
  return {v[0], v[1]};
}

PoolGeometry geometry(const char* op, const Tensor& x, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                      at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  PoolGeometry g;
  std::tie(g.kh, g.kw) = pair_at_least(op, "kernel_size", kernel_size, 1);
  std::tie(g.sh, g.sw) = pair_at_least(op, "stride", stride, 1);
  std::tie(g.ph, g.pw) = pair_at_least(op, "padding", padding, 0);
  std::tie(g.dh, g.dw) = pair_at_least(op, "dilation", dilation, 1);
  // ATen's rule.
  TORCH_CHECK(g.ph <= g.kh / 2 && g.pw <= g.kw / 2, op, ": padding: expected at most half the kernel size (",
              g.kh / 2, ", ", g.kw / 2, "), received ", padding);
  g.in_h = x.size(2);
  g.in_w = x.size(3);
  g.out_h = at::native::pooling_output_shape<int64_t>(g.in_h, g.kh, g.ph, g.sh, g.dh, ceil_mode);
  g.out_w = at::native::pooling_output_shape<int64_t>(g.in_w, g.kw, g.pw, g.sw, g.dw, ceil_mode);
  TORCH_CHECK(g.out_h >= 1 && g.out_w >= 1, op, ": x: its planes (", g.in_h, ", ", g.in_w,
              ") are smaller than the window; the output would be (", g.out_h, ", ", g.out_w, ")");
  TORCH_CHECK(g.in_h * g.in_w <= std::numeric_limits<int32_t>::max(), op, ": x: planes of at most 2^31 - 1 ",
              "elements (the loops' tap offsets are int32), received (", g.in_h, ", ", g.in_w, ")");
  return g;
}

void check_cpu(const char* op, const char* name, const Tensor& t) {
  TORCH_CHECK(t.device().is_cpu(), op, ": ", name, ": expected a CPU tensor, received device ", t.device());
}

}  // namespace

T3 max_pool2d_dual(const Tensor& x, const OptTensor& xt, at::IntArrayRef kernel_size, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, bool ceil_mode) {
  const char* op = "fastdstn::max_pool2d_dual";
  check_floating(op, "x", x);
  check_cpu(op, "x", x);
  TORCH_CHECK(x.dim() == 4, op, ": x: expected (N, C, H, W), received shape ", x.sizes());
  check_like(op, "xt", xt, x, "x");
  const PoolGeometry g = geometry(op, x, kernel_size, stride, padding, dilation, ceil_mode);
  const Tensor X = x.contiguous(), Xt = contiguous_or_undefined(xt);
  const auto out_shape = {x.size(0), x.size(1), g.out_h, g.out_w};
  Tensor y = at::empty(out_shape, X.options());
  Tensor yt = Xt.defined() ? at::empty(out_shape, X.options()) : at::empty({0}, X.options());
  Tensor indices = at::empty(out_shape, X.options().dtype(at::kLong));
  MaxPoolDual e{X.scalar_type()};
  e.planes = x.size(0) * x.size(1);
  e.geo = g;
  e.x = X.data_ptr();
  e.xt = ptr_or_null(Xt);
  e.y = y.data_ptr();
  e.yt = Xt.defined() ? yt.data_ptr() : nullptr;
  e.indices = indices.data_ptr<int64_t>();
  if (y.numel() > 0) max_pool_dual_cpu(e);
  return {y, yt, indices};
}

Tensor max_pool2d_dual_backward(const Tensor& grad_yt, const Tensor& indices, at::IntArrayRef input_size) {
  const char* op = "fastdstn::max_pool2d_dual_backward";
  check_floating(op, "grad_yt", grad_yt);
  check_cpu(op, "grad_yt", grad_yt);
  TORCH_CHECK(grad_yt.dim() == 4, op, ": grad_yt: expected (N, C, H_out, W_out), received shape ", grad_yt.sizes());
  TORCH_CHECK(indices.scalar_type() == at::kLong, op, ": indices: expected int64, received ", indices.scalar_type());
  TORCH_CHECK(indices.sizes() == grad_yt.sizes(), op, ": indices: expected shape ", grad_yt.sizes(),
              " (the shape of grad_yt), received ", indices.sizes());
  check_cpu(op, "indices", indices);
  TORCH_CHECK(input_size.size() == 2 && input_size[0] >= 0 && input_size[1] >= 0, op,
              ": input_size: expected the input's (H, W), received ", input_size);
  const Tensor G = grad_yt.contiguous(), I = indices.contiguous();
  Tensor grad_x = at::empty({G.size(0), G.size(1), input_size[0], input_size[1]}, G.options());
  int64_t bad = 0;
  MaxPoolDualBackward e{G.scalar_type()};
  e.planes = G.size(0) * G.size(1);
  e.in_plane = input_size[0] * input_size[1];
  e.out_plane = G.size(2) * G.size(3);
  e.grad_y = G.data_ptr();
  e.indices = I.data_ptr<int64_t>();
  e.grad_x = grad_x.data_ptr();
  e.bad = &bad;
  if (grad_x.numel() > 0) max_pool_dual_backward_cpu(e);
  TORCH_CHECK(bad == 0 && (grad_x.numel() > 0 || G.numel() == 0), op, ": indices: expected positions in [0, ",
              e.in_plane, ") of an input plane, received ", bad > 0 ? bad : G.numel(), " outside it");
  return grad_x;
}

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("max_pool2d_dual(Tensor x, Tensor? xt, int[2] kernel_size, int[2] stride, int[2] padding, "
        "int[2] dilation, bool ceil_mode) -> (Tensor, Tensor, Tensor)");
  m.def("max_pool2d_dual_backward(Tensor grad_yt, Tensor indices, int[2] input_size) -> Tensor");
}

// CPU only (pooling_ops.h).
TORCH_LIBRARY_IMPL(fastdstn, CPU, m) {
  m.impl("max_pool2d_dual", &max_pool2d_dual);
  m.impl("max_pool2d_dual_backward", &max_pool2d_dual_backward);
}

}  // namespace fastdstn
