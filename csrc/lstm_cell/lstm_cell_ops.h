// The LSTM cell family's C++ declarations: the op bodies and the description of the pointwise step that they
// hand to the CPU loops (lstm_cell_cpu.h) or the CUDA kernels (lstm_cell_cuda.cu).
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>

#include "../common/ops.h"
#include "lstm_cell_math.h"

namespace fastdstn {

// LSTM pointwise step on contiguous (N, 4H) gates and (N, H) cells; null pointers mean "absent".
struct LstmForward {
  at::ScalarType dtype;
  int64_t N = 0, H = 0;
  const void *gates = nullptr, *gates_t = nullptr, *c = nullptr, *c_t = nullptr;
  void *h = nullptr, *ht = nullptr, *c_new = nullptr, *ct_new = nullptr;
};

struct LstmBackward {
  at::ScalarType dtype;
  int64_t N = 0, H = 0;
  const void *gates = nullptr, *gates_t = nullptr, *c = nullptr, *c_t = nullptr;
  const void *gh = nullptr, *ght = nullptr, *gc = nullptr, *gct = nullptr;
  void *dgates = nullptr, *dgates_t = nullptr, *dc = nullptr, *dc_t = nullptr;
};

// A step's buffers as pointers to the storage type S, as the CPU loops and the CUDA kernels read them.
template <class S>
struct LstmForwardData {
  const S *gates, *gates_t, *c, *c_t;
  S *h, *ht, *c_new, *ct_new;
  FD_HD explicit LstmForwardData(const LstmForward& e)
      : gates(static_cast<const S*>(e.gates)), gates_t(static_cast<const S*>(e.gates_t)),
        c(static_cast<const S*>(e.c)), c_t(static_cast<const S*>(e.c_t)), h(static_cast<S*>(e.h)),
        ht(static_cast<S*>(e.ht)), c_new(static_cast<S*>(e.c_new)), ct_new(static_cast<S*>(e.ct_new)) {}
};

template <class S>
struct LstmBackwardData {
  const S *gates, *gates_t, *c, *c_t, *gh, *ght, *gc, *gct;
  S *dgates, *dgates_t, *dc, *dc_t;
  FD_HD explicit LstmBackwardData(const LstmBackward& e)
      : gates(static_cast<const S*>(e.gates)), gates_t(static_cast<const S*>(e.gates_t)),
        c(static_cast<const S*>(e.c)), c_t(static_cast<const S*>(e.c_t)), gh(static_cast<const S*>(e.gh)),
        ght(static_cast<const S*>(e.ght)), gc(static_cast<const S*>(e.gc)), gct(static_cast<const S*>(e.gct)),
        dgates(static_cast<S*>(e.dgates)), dgates_t(static_cast<S*>(e.dgates_t)), dc(static_cast<S*>(e.dc)),
        dc_t(static_cast<S*>(e.dc_t)) {}
};

// The step on each device: the CPU loops (lstm_cell_cpu.h, through lstm_cell_ops.cpp) and the CUDA kernels
// (lstm_cell_cuda.cu) on the current stream.
FASTDSTN_DECLARE_LOOP(lstm_forward, LstmForward)
FASTDSTN_DECLARE_LOOP(lstm_backward, LstmBackward)

// The op bodies (lstm_cell_ops.cpp), device-generic; schemas at the end of lstm_cell_ops.cpp.
T4 lstm_cell_dual(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t);
T4 lstm_cell_dual_backward(const OptTensor& gh, const OptTensor& ght, const OptTensor& gc, const OptTensor& gct,
                           const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t,
                           std::array<bool, 4> mask);

}  // namespace fastdstn
