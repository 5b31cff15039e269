// Autograd formulas of the fastdstn ops, in C++: one torch::autograd::Function per differentiable op,
// registered for the Autograd dispatch key (device-agnostic: the same kernel serves CPU and CUDA).
//
// Why C++ and not torch.library.register_autograd: at (32, 256, 256) the fused forward + response
// backward ops cost ~330 µs, and the Python setup_context/backward around them another ~110 µs (at
// (2, 2, 2), 45 µs of ops against 158 µs in all): more than the reference's whole unfused overhead.
//
// Each forward redispatches below autograd (so CPU, CUDA, Meta and fake-tensor tracing all reach
// their own kernel) and saves, of its auxiliary outputs (marked non-differentiable), the response
// pre-activation u; [s|t] = h·Vᵀ is recomputed by the backward op from h and V, which are saved
// anyway (H ≤ 16 columns: B·2C·H multiply-adds against the layer's B·C·K), instead of being kept
// as B × 2C values per layer (the LSTM LM's 10000-way decoder alone kept 53 MB). Each backward passes
// autograd's needs_input_grad to the backward op as a mask, so only the gradients asked for are
// computed (Δ-STN's response sub-step: ∂ẋ, ∂W_r, ∂b_r, ∂V), and returns undefined tensors for the
// others. When none of x, W_g, b_g requires grad, the primal y of a dual op is marked
// non-differentiable: autograd carries nothing along the primal chain.
#include <ATen/core/dispatch/Dispatcher.h>
#include <optional>
#include <torch/autograd.h>
#include <torch/library.h>

#include "stn_ops.h"

namespace fastdstn {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

// The op's typed dispatcher handle, looked up on the first call (the schemas are registered by then).
#define FASTDSTN_OP(fn, name)                                                 \
  static const auto handle = c10::Dispatcher::singleton()                     \
                                 .findSchemaOrThrow(name, "")                 \
                                 .typed<std::remove_pointer_t<decltype(&fn)>>()

// Held by the backward of every op but dropout while it calls ops. Their backward ops have no derivative
// formulas of their own, so a backward asked to build a graph (create_graph=True: a double backward, a
// Hessian-vector product) would give missing or wrong second derivatives (gradgradcheck: None for W_g and V of
// stn_linear, 7536.8 against 5548.6 for stn_conv2d): it is refused with the way out. Otherwise the ops skip the
// Autograd key: no boxed autograd fallback per backward-op call.
struct BackwardWithoutGraph {
  at::AutoDispatchBelowADInplaceOrView below;
  explicit BackwardWithoutGraph(const char* op) {
    TORCH_CHECK(!at::GradMode::is_enabled(), "double backward through ", op,
                " is not supported by the compiled backend; take higher-order gradients under "
                "fastdstn.ops.use_backend(\"reference\")");
  }
};

// Held by dropout's backward, which is the forward op again (dropout is linear in x with a fixed mask), so a
// double backward is correct: with create_graph=True the call goes through autograd. Without a graph it skips
// the Autograd key, and so does not re-enter DropoutFn, whose forward-mode-AD check would reject cotangents that
// carry tangents inside an fwAD.dual_level (tests/nn/test_dual.py).
struct BelowAutogradUnlessCreatingGraph {
  std::optional<at::AutoDispatchBelowADInplaceOrView> guard;
  BelowAutogradUnlessCreatingGraph() {
    if (!at::GradMode::is_enabled()) guard.emplace();
  }
};

// needs_input_grad per forward argument. Autograd numbers its edges over the tensor arguments that
// are present (an absent optional tensor has no edge), so argument i's edge counts the present
// tensor arguments before it.
template <size_t N>
std::array<bool, N> input_mask(AutogradContext* ctx, const std::array<bool, N>& present) {
  std::array<bool, N> mask{};
  size_t edge = 0;
  for (size_t i = 0; i < N; ++i) {
    if (present[i]) mask[i] = ctx->needs_input_grad(edge++);
  }
  return mask;
}

bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }
// An optional tensor argument that autograd sees as an input (None and undefined have no edge).
bool present(const OptTensor& t) { return t.has_value() && t->defined(); }
OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
Tensor value(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

// The backward op's gradients in forward-argument order: kept where asked for, undefined elsewhere
// (the op returns empty placeholders for those), then undefined for trailing non-tensor arguments.
template <size_t N, class Tuple>
variable_list masked(Tuple&& grads, const std::array<bool, N>& mask, size_t trailing) {
  variable_list out;
  out.reserve(N + trailing);
  std::apply([&](auto&&... g) { (out.emplace_back(std::move(g)), ...); }, std::forward<Tuple>(grads));
  for (size_t i = 0; i < N; ++i) {
    if (!mask[i]) out[i] = Tensor();
  }
  out.resize(N + trailing);
  return out;
}

template <size_t N>
bool any(const std::array<bool, N>& mask) {
  for (bool m : mask) {
    if (m) return true;
  }
  return false;
}

std::vector<int64_t> ints(const c10::IValue& v) { return v.toIntVector(); }

// An activation the linear backward reads only for the weights' gradients: when no weight is trained
// (the hyper step) a zero-stride stand-in with its shape, dtype and device is saved instead, so that
// the activation is not kept alive until the backward, which reads only its metadata (its one element
// is left uninitialized). Undefined stays undefined (an absent ẋ).
Tensor kept_if(bool needed, const Tensor& t) {
  if (needed || !t.defined()) return t;
  return at::empty({}, t.options()).expand(t.sizes());
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
    ctx->set_materialize_grads(false);
    if (primal_trained) {
      ctx->mark_non_differentiable({st, u});
    } else {
      ctx->mark_non_differentiable({y, st, u});
    }
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
void save_geometry(AutogradContext* ctx, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                   int64_t groups) {
  ctx->saved_data["stride"] = stride.vec();
  ctx->saved_data["padding"] = padding.vec();
  ctx->saved_data["dilation"] = dilation.vec();
  ctx->saved_data["groups"] = groups;
}

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
    ctx->saved_data["has_bg"] = present(bg);
    save_geometry(ctx, stride, padding, dilation, groups);
    return {y, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_conv2d_backward, "fastdstn::stn_conv2d_backward");
    BackwardWithoutGraph below("fastdstn::stn_conv2d");
    const auto s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const bool has_bg = d["has_bg"].toBool();
    const auto mask = input_mask<7>(ctx, {true, true, true, has_bg, true, s[4].defined(), true});
    if (!grads[0].defined() || !any(mask)) return variable_list(11);
    return masked<7>(handle.call(grads[0], s[0], s[1], s[2], s[3], opt(s[4]), s[5], s[6], ints(d["stride"]),
                                 ints(d["padding"]), ints(d["dilation"]), d["groups"].toInt(), has_bg, mask),
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
    ctx->set_materialize_grads(false);
    if (primal_trained) {
      ctx->mark_non_differentiable({st, u});
    } else {
      ctx->mark_non_differentiable({y, st, u});
    }
    ctx->save_for_backward({x, value(xt), eps, Wg, Wr, value(br), V, u});
    ctx->saved_data["has_bg"] = present(bg);
    save_geometry(ctx, stride, padding, dilation, groups);
    return {y, yt, st, u};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(stn_conv2d_dual_backward, "fastdstn::stn_conv2d_dual_backward");
    BackwardWithoutGraph below("fastdstn::stn_conv2d_dual");
    const auto s = ctx->get_saved_variables();
    auto& d = ctx->saved_data;
    const bool has_bg = d["has_bg"].toBool();
    const auto mask = input_mask<8>(ctx, {true, s[1].defined(), true, true, has_bg, true, s[5].defined(), true});
    if ((!grads[0].defined() && !grads[1].defined()) || !any(mask)) return variable_list(12);
    return masked<8>(handle.call(opt(grads[0]), opt(grads[1]), s[0], opt(s[1]), s[2], s[3], s[4], opt(s[5]), s[6],
                                 s[7], ints(d["stride"]), ints(d["padding"]), ints(d["dilation"]),
                                 d["groups"].toInt(), has_bg, mask),
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

// ================================================================ lstm_cell_dual
struct LstmFn : torch::autograd::Function<LstmFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& gates, const OptTensor& gates_t, const Tensor& c,
                               const OptTensor& c_t) {
    FASTDSTN_OP(lstm_cell_dual, "fastdstn::lstm_cell_dual");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [h, ht, c_new, ct] = handle.call(gates, gates_t, c, c_t);
    ctx->set_materialize_grads(false);
    // The primal outputs depend on the primal inputs alone; the tangents on both.
    std::vector<Tensor> constant;
    if (!requires_grad(gates) && !requires_grad(c)) constant.insert(constant.end(), {h, c_new});
    if (!present(gates_t) && !present(c_t)) constant.insert(constant.end(), {ht, ct});
    if (!constant.empty()) ctx->mark_non_differentiable(constant);
    ctx->save_for_backward({gates, value(gates_t), c, value(c_t)});
    return {h, ht, c_new, ct};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(lstm_cell_dual_backward, "fastdstn::lstm_cell_dual_backward");
    BackwardWithoutGraph below("fastdstn::lstm_cell_dual");
    const auto s = ctx->get_saved_variables();
    const auto mask = input_mask<4>(ctx, {true, s[1].defined(), true, s[3].defined()});
    const bool none = !grads[0].defined() && !grads[1].defined() && !grads[2].defined() && !grads[3].defined();
    if (none || !any(mask)) return variable_list(4);
    return masked<4>(handle.call(opt(grads[0]), opt(grads[1]), opt(grads[2]), opt(grads[3]), s[0], opt(s[1]), s[2],
                                 opt(s[3]), mask),
                     mask, 0);
  }
};

T4 lstm_cell_dual_autograd(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t) {
  auto r = LstmFn::apply(gates, gates_t, c, c_t);
  return {r[0], r[1], r[2], r[3]};
}

// ================================================================ dropout_dual
// y = x ⊙ m is linear in x: the cotangent goes through the same mask, regenerated from the seed.
struct DropoutFn : torch::autograd::Function<DropoutFn> {
  static variable_list forward(AutogradContext* ctx, const Tensor& x, const OptTensor& xt, const Tensor& rate,
                               int64_t seed, int64_t batch_dim, at::IntArrayRef shared_dims) {
    FASTDSTN_OP(dropout_dual, "fastdstn::dropout_dual");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [y, yt] = handle.call(x, xt, rate, seed, batch_dim, shared_dims);
    ctx->set_materialize_grads(false);
    // y = x ⊙ m and ẏ = ẋ ⊙ m: an output whose input carries no gradient carries none either. Without this a
    // primal fed by a frozen network (Δ-STN's response sub-step) would require grad because its tangent
    // does, and every STN layer after the dropout would compute ∂x (two more weight GEMMs per layer).
    std::vector<Tensor> constant;
    if (!requires_grad(x)) constant.push_back(y);
    if (!requires_grad(xt)) constant.push_back(yt);
    if (!constant.empty()) ctx->mark_non_differentiable(constant);
    ctx->save_for_backward({rate});
    ctx->saved_data["has_xt"] = present(xt);
    ctx->saved_data["seed"] = seed;
    ctx->saved_data["batch_dim"] = batch_dim;
    ctx->saved_data["shared_dims"] = shared_dims.vec();
    return {y, yt};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    FASTDSTN_OP(dropout_dual, "fastdstn::dropout_dual");
    BelowAutogradUnlessCreatingGraph below;
    auto& d = ctx->saved_data;
    const Tensor rate = ctx->get_saved_variables()[0];
    const auto mask = input_mask<3>(ctx, {true, d["has_xt"].toBool(), true});
    const Tensor gy = mask[0] ? grads[0] : Tensor(), gyt = mask[1] ? grads[1] : Tensor();
    const int64_t seed = d["seed"].toInt(), batch_dim = d["batch_dim"].toInt();
    const auto shared = ints(d["shared_dims"]);
    variable_list out(6);
    if (gy.defined() && gyt.defined()) {
      std::tie(out[0], out[1]) = handle.call(gy, gyt, rate, seed, batch_dim, shared);
    } else if (gy.defined()) {
      out[0] = std::get<0>(handle.call(gy, std::nullopt, rate, seed, batch_dim, shared));
    } else if (gyt.defined()) {
      out[1] = std::get<0>(handle.call(gyt, std::nullopt, rate, seed, batch_dim, shared));
    }
    return out;
  }
};

std::tuple<Tensor, Tensor> dropout_dual_autograd(const Tensor& x, const OptTensor& xt, const Tensor& rate,
                                                 int64_t seed, int64_t batch_dim, at::IntArrayRef shared_dims) {
  auto r = DropoutFn::apply(x, xt, rate, seed, batch_dim, shared_dims);
  return {r[0], r[1]};
}

}  // namespace

TORCH_LIBRARY_IMPL(fastdstn, Autograd, m) {
  m.impl("stn_linear", &stn_linear_autograd);
  m.impl("stn_linear_dual", &stn_linear_dual_autograd);
  m.impl("stn_conv2d", &stn_conv2d_autograd);
  m.impl("stn_conv2d_dual", &stn_conv2d_dual_autograd);
  m.impl("lstm_cell_dual", &lstm_cell_dual_autograd);
  m.impl("dropout_dual", &dropout_dual_autograd);
}

}  // namespace fastdstn
