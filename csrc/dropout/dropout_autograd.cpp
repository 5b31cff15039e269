// Dropout's autograd formula in C++ (why C++: dense/dense_autograd.cpp), registered for the Autograd dispatch
// key; the shared plumbing is common/autograd.h.
#include <torch/library.h>

#include "../common/autograd.h"
#include "dropout_ops.h"

namespace fastdstn {
namespace {

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

TORCH_LIBRARY_IMPL(fastdstn, Autograd, m) { m.impl("dropout_dual", &dropout_dual_autograd); }

}  // namespace fastdstn
