// Autograd formulas of the dense ops, in C++: one torch::autograd::Function per differentiable op, registered
// for the Autograd dispatch key (device-agnostic: the same kernel serves CPU and CUDA); the shared plumbing is
// common/autograd.h.
//
// Why C++ and not torch.library.register_autograd: at (32, 256, 256) the fused forward + response
// backward ops cost ~330 µs, and the Python setup_context/backward around them another ~110 µs (at
// (2, 2, 2), 45 µs of ops against 158 µs in all): more than the reference's whole unfused overhead.
//
// Each forward saves, of its auxiliary outputs, the response pre-activation u; [s|t] = h·Vᵀ is recomputed by
// the backward op from h and V, which are saved anyway (H ≤ 16 columns: B·2C·H multiply-adds against the
// layer's B·C·K), instead of being kept as B × 2C values per layer (the LSTM LM's 10000-way decoder alone
// kept 53 MB). Δ-STN's response sub-step asks for ∂ẋ, ∂W_r, ∂b_r, ∂V only. When none of x, W_g, b_g requires
// grad, the primal y of a dual op is marked non-differentiable: autograd carries nothing along the primal chain.
#include <torch/library.h>

#include "../common/autograd.h"
#include "dense_ops.h"

namespace fastdstn {
namespace {

// An activation the linear backward reads only for the weights' gradients: when no weight is trained
// (the hyper step) a zero-stride stand-in with its shape, dtype and device is saved instead, so that
// the activation is not kept alive until the backward, which reads only its metadata (its one element
// is left uninitialized). Undefined stays undefined (an absent ẋ).
Tensor kept_if(bool needed, const Tensor& t) {
  if (needed || !t.defined()) return t;
  return at::empty({}, t.options()).expand(t.sizes());
}

// A dual op's outputs: [s|t] and u carry no gradient, nor does y when none of x, W_g, b_g is trained.
void mark_dual_outputs(AutogradContext* ctx, bool primal_trained, const Tensor& y, const Tensor& st,
                       const Tensor& u) {
  ctx->set_materialize_grads(false);
  if (primal_trained) {
    ctx->mark_non_differentiable({st, u});
  } else {
    ctx->mark_non_differentiable({y, st, u});
  }
}

// ================================================================ stn_linear
struct LinearFn : torch::autograd::Function<LinearFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& Wg,
                               const OptTensor& bg, const Tensor& Wr, const OptTensor& br, const Tensor& V) {
    FASTDSTN_OP(stn_linear, "fastdstn::stn_linear");
    at::AutoDispatchBelowADInplaceOrView guard;
    const bool weights_trained = requires_grad(Wg) || requires_grad(Wr);
    auto [y, st, u] = handle.call(x, h, Wg, bg, Wr, br, V);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({st, u});
    ctx->save_for_backward({kept_if(weights_trained, x), h, Wg, Wr, value(br), V, u});
    ctx->saved_data["has_bg"] = present(bg);
    return {y, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_linear_backward, "fastdstn::stn_linear_backward");
    BackwardWithoutGraph below("fastdstn::stn_linear");
    const auto s = ctx->get_saved_variables();
    const bool has_bg = ctx->saved_data["has_bg"].toBool();
    const auto mask = input_mask<7>(ctx, {true, true, true, has_bg, true, s[4].defined(), true});
    if (!grads[0].defined() || !any(mask)) return variable_list(7);
    return masked<7>(handle.call(grads[0], s[0], s[1], s[2], s[3], opt(s[4]), s[5], s[6], has_bg, mask), mask, 0);
  }
};

T3 stn_linear_autograd(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V) {
  auto r = LinearFn::apply(x, h, Wg, bg, Wr, br, V);
  return {r[0], r[1], r[2]};
}

// ================================================================ stn_linear_dual
// Saved: x, xt, eps, Wg, Wr, br, V, u (xt and br undefined when absent).
struct LinearDualFn : torch::autograd::Function<LinearDualFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const OptTensor& xt, const Tensor& eps,
                               const Tensor& Wg, const OptTensor& bg, const Tensor& Wr, const OptTensor& br,
                               const Tensor& V) {
    FASTDSTN_OP(stn_linear_dual, "fastdstn::stn_linear_dual");
    const bool primal_trained = requires_grad(x) || requires_grad(Wg) || requires_grad(bg);
    const bool weights_trained = requires_grad(Wg) || requires_grad(Wr);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, yt, st, u] = handle.call(x, xt, eps, Wg, bg, Wr, br, V);
    mark_dual_outputs(ctx, primal_trained, y, st, u);
    ctx->save_for_backward(
        {kept_if(weights_trained, x), kept_if(requires_grad(Wg), value(xt)), eps, Wg, Wr, value(br), V, u});
    ctx->saved_data["has_bg"] = present(bg);
    return {y, yt, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_linear_dual_backward, "fastdstn::stn_linear_dual_backward");
    BackwardWithoutGraph below("fastdstn::stn_linear_dual");
    const auto s = ctx->get_saved_variables();
    const bool has_bg = ctx->saved_data["has_bg"].toBool();
    const auto mask = input_mask<8>(ctx, {true, s[1].defined(), true, true, has_bg, true, s[5].defined(), true});
    if ((!grads[0].defined() && !grads[1].defined()) || !any(mask)) return variable_list(8);
    return masked<8>(handle.call(opt(grads[0]), opt(grads[1]), s[0], opt(s[1]), s[2], s[3], s[4], opt(s[5]), s[6],
                                 s[7], has_bg, mask),
                     mask, 0);
  }
};

T4 stn_linear_dual_autograd(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg,
                            const OptTensor& bg, const Tensor& Wr, const OptTensor& br, const Tensor& V) {
  auto r = LinearDualFn::apply(x, xt, eps, Wg, bg, Wr, br, V);
  return {r[0], r[1], r[2], r[3]};
}

// ================================================================ conv geometry
// What a conv op's backward reads besides tensors: whether b_g was given, and the geometry.
struct ConvSaved {
  bool has_bg;
  std::vector<int64_t> stride, padding, dilation;
  int64_t groups;

  static void save(AutogradContext* ctx, const OptTensor& bg, at::IntArrayRef stride, at::IntArrayRef padding,
                   at::IntArrayRef dilation, int64_t groups) {
    ctx->saved_data["has_bg"] = present(bg);
    ctx->saved_data["stride"] = stride.vec();
    ctx->saved_data["padding"] = padding.vec();
    ctx->saved_data["dilation"] = dilation.vec();
    ctx->saved_data["groups"] = groups;
  }

  explicit ConvSaved(AutogradContext* ctx)
      : has_bg(ctx->saved_data["has_bg"].toBool()), stride(ints(ctx->saved_data["stride"])),
        padding(ints(ctx->saved_data["padding"])), dilation(ints(ctx->saved_data["dilation"])),
        groups(ctx->saved_data["groups"].toInt()) {}
};

// ================================================================ stn_conv2d
struct ConvFn : torch::autograd::Function<ConvFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const Tensor& h, const Tensor& Wg,
                               const OptTensor& bg, const Tensor& Wr, const OptTensor& br, const Tensor& V,
                               at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                               int64_t groups) {
    FASTDSTN_OP(stn_conv2d, "fastdstn::stn_conv2d");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, st, u] = handle.call(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups);
    ctx->set_materialize_grads(false);
    ctx->mark_non_differentiable({st, u});
    ctx->save_for_backward({x, h, Wg, Wr, value(br), V, u});
    ConvSaved::save(ctx, bg, stride, padding, dilation, groups);
    return {y, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_conv2d_backward, "fastdstn::stn_conv2d_backward");
    BackwardWithoutGraph below("fastdstn::stn_conv2d");
    const auto s = ctx->get_saved_variables();
    const ConvSaved c(ctx);
    const auto mask = input_mask<7>(ctx, {true, true, true, c.has_bg, true, s[4].defined(), true});
    if (!grads[0].defined() || !any(mask)) return variable_list(11);
    return masked<7>(handle.call(grads[0], s[0], s[1], s[2], s[3], opt(s[4]), s[5], s[6], c.stride, c.padding,
                                 c.dilation, c.groups, c.has_bg, mask),
                     mask, 4);
  }
};

T3 stn_conv2d_autograd(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V, at::IntArrayRef stride, at::IntArrayRef padding,
                       at::IntArrayRef dilation, int64_t groups) {
  auto r = ConvFn::apply(x, h, Wg, bg, Wr, br, V, stride, padding, dilation, groups);
  return {r[0], r[1], r[2]};
}

// ================================================================ stn_conv2d_dual
struct ConvDualFn : torch::autograd::Function<ConvDualFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const OptTensor& xt, const Tensor& eps,
                               const Tensor& Wg, const OptTensor& bg, const Tensor& Wr, const OptTensor& br,
                               const Tensor& V, at::IntArrayRef stride, at::IntArrayRef padding,
                               at::IntArrayRef dilation, int64_t groups) {
    FASTDSTN_OP(stn_conv2d_dual, "fastdstn::stn_conv2d_dual");
    const bool primal_trained = requires_grad(x) || requires_grad(Wg) || requires_grad(bg);
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, yt, st, u] = handle.call(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups);
    mark_dual_outputs(ctx, primal_trained, y, st, u);
    ctx->save_for_backward({x, value(xt), eps, Wg, Wr, value(br), V, u});
    ConvSaved::save(ctx, bg, stride, padding, dilation, groups);
    return {y, yt, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_conv2d_dual_backward, "fastdstn::stn_conv2d_dual_backward");
    BackwardWithoutGraph below("fastdstn::stn_conv2d_dual");
    const auto s = ctx->get_saved_variables();
    const ConvSaved c(ctx);
    const auto mask = input_mask<8>(ctx, {true, s[1].defined(), true, true, c.has_bg, true, s[5].defined(), true});
    if ((!grads[0].defined() && !grads[1].defined()) || !any(mask)) return variable_list(12);
    return masked<8>(handle.call(opt(grads[0]), opt(grads[1]), s[0], opt(s[1]), s[2], s[3], s[4], opt(s[5]), s[6],
                                 s[7], c.stride, c.padding, c.dilation, c.groups, c.has_bg, mask),
                     mask, 4);
  }
};

T4 stn_conv2d_dual_autograd(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg,
                            const OptTensor& bg, const Tensor& Wr, const OptTensor& br, const Tensor& V,
                            at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                            int64_t groups) {
  auto r = ConvDualFn::apply(x, xt, eps, Wg, bg, Wr, br, V, stride, padding, dilation, groups);
  return {r[0], r[1], r[2], r[3]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdstn, Autograd, m) {
  m.impl("stn_linear", &stn_linear_autograd);
  m.impl("stn_linear_dual", &stn_linear_dual_autograd);
  m.impl("stn_conv2d", &stn_conv2d_autograd);
  m.impl("stn_conv2d_dual", &stn_conv2d_dual_autograd);
}

}  // namespace fastdstn
