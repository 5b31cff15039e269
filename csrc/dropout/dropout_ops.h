// The dropout family's C++ declarations: the op body and the description of the masked pass that it hands to
// the CPU loop (dropout_cpu.h) or the CUDA kernel (dropout_cuda.cu).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <tuple>

#include "../common/ops.h"
#include "dropout_math.h"

namespace fastdstn {

// Dropout over a contiguous x of up to kMaxDims dims. Mask index of element (i_0, …, i_{n-1}) is
// Σ_d i_d·mask_stride[d] (mask_stride is 0 on shared dims); the example is i_{batch_dim}.
constexpr int kMaxDims = 8;
struct Dropout {
  at::ScalarType dtype;
  int ndim = 0;
  int64_t numel = 0;
  int64_t sizes[kMaxDims] = {0};
  int64_t mask_stride[kMaxDims] = {0};
  int batch_dim = 0;
  uint64_t stream = 0;
  const double* rate = nullptr;  // (B) float64 copy of the rates
  const void *x = nullptr, *xt = nullptr;
  void *y = nullptr, *yt = nullptr;
};

// The masked pass on each device: the CPU loop (dropout_cpu.h, through dropout_ops.cpp) and the CUDA kernel
// (dropout_cuda.cu) on the current stream.
FASTDSTN_DECLARE_LOOP(dropout, Dropout)

// The op body (dropout_ops.cpp), device-generic; its schema at the end of dropout_ops.cpp.
std::tuple<Tensor, Tensor> dropout_dual(const Tensor& x, const OptTensor& xt, const Tensor& rate, int64_t seed,
                                        int64_t batch_dim, at::IntArrayRef shared_dims);

}  // namespace fastdstn
