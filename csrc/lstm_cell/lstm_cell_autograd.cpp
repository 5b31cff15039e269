// The LSTM cell's autograd formula in C++ (why C++: dense/dense_autograd.cpp), registered for the Autograd
// dispatch key; the shared plumbing is common/autograd.h.
#include <torch/library.h>

#include "../common/autograd.h"
#include "lstm_cell_ops.h"

namespace fastdstn {
namespace {

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

}  // namespace

TORCH_LIBRARY_IMPL(fastdstn, Autograd, m) { m.impl("lstm_cell_dual", &lstm_cell_dual_autograd); }

}  // namespace fastdstn
