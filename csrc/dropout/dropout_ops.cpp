// Per-example dropout with a tangent (docs/METHOD.md §6): dropout_dual, whose backward is itself (the mask is
// regenerated from the seed). Schema, the device-generic op body (checks and allocation here, the loop of the
// tensors' device in dropout_cpu.h or dropout_cuda.cu, both drawing the mask of dropout_math.h), its
// registration for the CPU and CUDA keys, and the CPU loop.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/isa.h"
#include "../common/ops.h"
#include "dropout_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../dropout/dropout_cpu.h"
#include "../common/isa_copies.h"

void dropout_cpu(const Dropout& e) { FASTDSTN_CPU_CALL(dropout, e) }

std::tuple<Tensor, Tensor> dropout_dual(const Tensor& x, const OptTensor& xt, const Tensor& rate, int64_t seed,
                                        int64_t batch_dim, at::IntArrayRef shared_dims) {
  const char* op = "fastdstn::dropout_dual";
  check_floating(op, "x", x);
  const int64_t nd = x.dim();
  TORCH_CHECK(nd >= 1 && nd <= kMaxDims, op, ": x: expected 1 to ", kMaxDims, " dimensions, received shape ",
              x.sizes());
  TORCH_CHECK(batch_dim >= -nd && batch_dim < nd, op, ": batch_dim: expected a dimension of x (shape ", x.sizes(),
              "), received ", batch_dim);
  const int bd = static_cast<int>((batch_dim + nd) % nd);
  check_like(op, "xt", xt, x, "x");
  TORCH_CHECK(rate.dim() == 1 && rate.size(0) == x.size(bd), op, ": rate: expected shape [", x.size(bd),
              "] (one drop probability per example), received ", rate.sizes());
  TORCH_CHECK(rate.is_floating_point(), op, ": rate: expected a floating-point tensor, received ",
              rate.scalar_type());
  TORCH_CHECK(rate.device() == x.device(), op, ": rate: expected device ", x.device(),
              " (the device of x), received ", rate.device());
  const Tensor r64 = rate.to(at::kDouble).contiguous();
  if (r64.numel() > 0) {
    // NaN fails both comparisons. On CUDA the check stays on the device: reading its verdict would stall the host
    // twice a call (forward and backward); the public function and StnDropout have checked the rates on the host
    // with their own messages before a training step gets here.
    const Tensor in_range = at::logical_and(r64 >= 0.0, r64 < 1.0).all();
    if (r64.is_cuda()) {
      at::_assert_async(in_range, "fastdstn::dropout_dual: rate: expected drop probabilities in [0, 1)");
    } else if (!in_range.item<bool>()) {
      TORCH_CHECK(at::isfinite(r64).all().item<bool>(), op, ": rate: expected finite drop probabilities, received ",
                  "non-finite values");
      const auto [lo, hi] = at::aminmax(r64);
      TORCH_CHECK(false, op, ": rate: expected drop probabilities in [0, 1), received values in [",
                  lo.item<double>(), ", ", hi.item<double>(), "]");
    }
  }
  bool shared[kMaxDims] = {false};
  for (int64_t d : shared_dims) {
    TORCH_CHECK(d >= -nd && d < nd, op, ": shared_dims: ", d, " is not a dimension of x (shape ", x.sizes(), ")");
    const int64_t k = (d + nd) % nd;
    TORCH_CHECK(k != bd, op, ": shared_dims: must not contain the batch dimension ", bd);
    shared[k] = true;
  }
  const Tensor X = x.contiguous(), Xt = contiguous_or_undefined(xt);
  Tensor y = at::empty_like(X);
  Tensor yt = Xt.defined() ? at::empty_like(X) : at::empty({0}, X.options());
  Dropout e{X.scalar_type()};
  e.ndim = static_cast<int>(nd);
  e.numel = X.numel();
  int64_t stride = 1;
  for (int64_t d = nd - 1; d >= 0; --d) {
    e.sizes[d] = X.size(d);
    e.mask_stride[d] = shared[d] ? 0 : stride;
    if (!shared[d]) stride *= X.size(d);
  }
  e.batch_dim = bd;
  e.stream = math::dropout_stream(seed);
  e.rate = r64.data_ptr<double>();
  e.x = X.data_ptr();
  e.xt = ptr_or_null(Xt);
  e.y = y.data_ptr();
  e.yt = Xt.defined() ? yt.data_ptr() : nullptr;
  if (e.numel > 0) FASTDSTN_RUN(X, e, dropout);
  return {y, yt};
}

namespace {

void register_kernels(torch::Library& m) { m.impl("dropout_dual", &dropout_dual); }

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("dropout_dual(Tensor x, Tensor? xt, Tensor rate, int seed, int batch_dim, int[] shared_dims)"
        " -> (Tensor y, Tensor yt)");
}

FASTDSTN_REGISTER_KERNELS(register_kernels)

}  // namespace fastdstn
