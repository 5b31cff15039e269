// What every family's op bodies (<family>/<family>_ops.cpp) share: the tensor types, the argument checks,
// the optional-tensor helpers and the switch that runs a fused loop on the tensors' device.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <array>
#include <optional>
#include <tuple>
#include <type_traits>

namespace fastdstn {

using Tensor = at::Tensor;
using OptTensor = std::optional<Tensor>;
using T3 = std::tuple<Tensor, Tensor, Tensor>;
using T4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using T7 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using T8 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

// An optional tensor argument that was given (None and an undefined tensor count as absent).
inline bool present(const OptTensor& t) { return t.has_value() && t->defined(); }
inline Tensor contiguous_or_undefined(const OptTensor& t) { return present(t) ? t->contiguous() : Tensor(); }
inline const void* ptr_or_null(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
inline void* mutable_ptr_or_null(Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

// The dtypes the fused loops compute: float32 and float64 everywhere, float16 and bfloat16 on CUDA.
inline void check_floating(const char* op, const char* name, const Tensor& t) {
  const auto dt = t.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble || (t.is_cuda() && (dt == at::kHalf || dt == at::kBFloat16));
  TORCH_CHECK(ok, op, ": ", name, ": expected float32 or float64 (or float16/bfloat16 on CUDA), received ", dt);
}

// `t` has the dtype and device of `ref` (named `ref_name` in the message).
inline void check_same_kind(const char* op, const char* name, const Tensor& t, const Tensor& ref,
                            const char* ref_name) {
  TORCH_CHECK(t.scalar_type() == ref.scalar_type(), op, ": ", name, ": expected dtype ", ref.scalar_type(),
              " (the dtype of ", ref_name, "), received ", t.scalar_type());
  TORCH_CHECK(t.device() == ref.device(), op, ": ", name, ": expected device ", ref.device(), " (the device of ",
              ref_name, "), received ", t.device());
}

// An optional `t`, when given, has the shape, dtype and device of `ref`.
inline void check_like(const char* op, const char* name, const OptTensor& t, const Tensor& ref,
                       const char* ref_name) {
  if (!present(t)) return;
  TORCH_CHECK(t->sizes() == ref.sizes(), op, ": ", name, ": expected shape ", ref.sizes(), " (the shape of ",
              ref_name, "), received ", t->sizes());
  check_same_kind(op, name, *t, ref, ref_name);
}

// Runs a fused loop on the device of `like`: `cpu(e)`, or `cuda(e)`, which is null in a build without CUDA
// kernels. Call it through FASTDSTN_RUN(like, e, loop), which names loop_cpu and loop_cuda.
template <class E>
void run_on_device(const Tensor& like, const E& e, void (*cpu)(const E&), void (*cuda)(const E&)) {
  if (!like.is_cuda()) return cpu(e);
  TORCH_CHECK(cuda != nullptr, "fastdstn: this build has no CUDA kernels: rebuild with FASTDSTN_CUDA=1");
  cuda(e);
}

#ifdef FASTDSTN_WITH_CUDA
#define FASTDSTN_RUN(like, e, loop) ::fastdstn::run_on_device(like, e, loop##_cpu, loop##_cuda)
#else
#define FASTDSTN_RUN(like, e, loop) ::fastdstn::run_on_device<std::decay_t<decltype(e)>>(like, e, loop##_cpu, nullptr)
#endif

// Declares a fused loop on each device: loop_cpu and, in a CUDA build, loop_cuda, both taking the description E.
#ifdef FASTDSTN_WITH_CUDA
#define FASTDSTN_DECLARE_LOOP(loop, E) \
  void loop##_cpu(const E& e);         \
  void loop##_cuda(const E& e);
#else
#define FASTDSTN_DECLARE_LOOP(loop, E) void loop##_cpu(const E& e);
#endif

// Registers a family's device-generic op bodies for the CPU key and, in a CUDA build, the CUDA key: one list.
#ifdef FASTDSTN_WITH_CUDA
#define FASTDSTN_REGISTER_KERNELS(register_fn)                        \
  TORCH_LIBRARY_IMPL(fastdstn, CPU, m) { register_fn(m); }           \
  TORCH_LIBRARY_IMPL(fastdstn, CUDA, m) { register_fn(m); }
#else
#define FASTDSTN_REGISTER_KERNELS(register_fn) \
  TORCH_LIBRARY_IMPL(fastdstn, CPU, m) { register_fn(m); }
#endif

}  // namespace fastdstn
