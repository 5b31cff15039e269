// What every family's autograd formulas (<family>/<family>_autograd.cpp) share: the dispatcher handle of an op,
// the guards a backward holds while it calls ops, and the helpers that turn autograd's needs_input_grad into a
// backward op's mask and the backward op's outputs back into autograd's gradients.
//
// Each forward redispatches below autograd (so CPU, CUDA, Meta and fake-tensor tracing all reach their own
// kernel) and marks its auxiliary outputs non-differentiable. Each backward passes needs_input_grad to the
// backward op as a mask, so only the gradients asked for are computed, and returns undefined tensors for the
// others.
#pragma once

#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>

#include <array>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "ops.h"

namespace fastdstn {

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

inline bool requires_grad(const Tensor& t) { return t.defined() && t.requires_grad(); }
inline bool requires_grad(const OptTensor& t) { return t.has_value() && requires_grad(*t); }
inline OptTensor opt(const Tensor& t) { return t.defined() ? OptTensor(t) : std::nullopt; }
inline Tensor value(const OptTensor& t) { return t.has_value() ? *t : Tensor(); }

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

inline std::vector<int64_t> ints(const c10::IValue& v) { return v.toIntVector(); }

}  // namespace fastdstn
