// CUDA kernels of the LSTM cell, forward and backward: the formulas of lstm_cell_math.h (the same code the CPU
// loops run) in the op-math type, one (row, unit) pair per thread with a grid-stride loop, on the current stream.
#include "../common/cuda.cuh"
#include "lstm_cell_ops.h"

namespace fastdstn {
namespace {

__device__ __forceinline__ float dexp(float x) { return __expf(x); }
__device__ __forceinline__ double dexp(double x) { return ::exp(x); }
__device__ __forceinline__ float dtanh(float x) { return ::tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return ::tanh(x); }
template <class A>
__device__ __forceinline__ A dsigmoid(A x) {
  return A(1) / (A(1) + dexp(-x));
}

template <class S>
__global__ void lstm_forward_kernel(LstmForward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.N * e.H, H = e.H;
  const auto [G, Gt, C0, Ct, Ho, Hto, Co, Cto] = LstmForwardData<S>(e);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / H, j = k % H, q = r * 4 * H + j;
    const A i = dsigmoid(static_cast<A>(G[q])), f = dsigmoid(static_cast<A>(G[q + H]));
    const A g = dtanh(static_cast<A>(G[q + 2 * H])), o = dsigmoid(static_cast<A>(G[q + 3 * H]));
    const A c = static_cast<A>(C0[k]);
    const A cn = math::lstm_cell(i, f, g, c), tanh_c = dtanh(cn);
    Co[k] = static_cast<S>(cn);
    Ho[k] = static_cast<S>(o * tanh_c);
    if (Hto) {
      const A cnt = math::lstm_cell_tangent(i, f, g, c, ld<A>(Gt, q), ld<A>(Gt, q + H), ld<A>(Gt, q + 2 * H), ld<A>(Ct, k));
      Cto[k] = static_cast<S>(cnt);
      Hto[k] = static_cast<S>(math::lstm_hidden_tangent(o, tanh_c, ld<A>(Gt, q + 3 * H), cnt));
    }
  }
}

template <class S>
__global__ void lstm_backward_kernel(LstmBackward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.N * e.H, H = e.H;
  const auto [G, Gt, C0, Ct, gh, ght, gc, gct, dG, dGt, dC, dCt] = LstmBackwardData<S>(e);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / H, j = k % H, q = r * 4 * H + j;
    const A i = dsigmoid(static_cast<A>(G[q])), f = dsigmoid(static_cast<A>(G[q + H]));
    const A g = dtanh(static_cast<A>(G[q + 2 * H])), o = dsigmoid(static_cast<A>(G[q + 3 * H]));
    const A c = static_cast<A>(C0[k]);
    const A tanh_c = dtanh(math::lstm_cell(i, f, g, c));
    const auto d = math::lstm_backward(i, f, g, o, c, tanh_c, ld<A>(Gt, q), ld<A>(Gt, q + H), ld<A>(Gt, q + 2 * H),
                                    ld<A>(Gt, q + 3 * H), ld<A>(Ct, k), ld<A>(gh, k), ld<A>(ght, k), ld<A>(gc, k),
                                    ld<A>(gct, k));
    if (dG) {
      dG[q] = static_cast<S>(d.dai);
      dG[q + H] = static_cast<S>(d.daf);
      dG[q + 2 * H] = static_cast<S>(d.dag);
      dG[q + 3 * H] = static_cast<S>(d.dao);
    }
    if (dGt) {
      dGt[q] = static_cast<S>(d.dait);
      dGt[q + H] = static_cast<S>(d.daft);
      dGt[q + 2 * H] = static_cast<S>(d.dagt);
      dGt[q + 3 * H] = static_cast<S>(d.daot);
    }
    if (dC) dC[k] = static_cast<S>(d.dc);
    if (dCt) dCt[k] = static_cast<S>(d.dct);
  }
}

}  // namespace

void lstm_forward_cuda(const LstmForward& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_lstm_forward_cuda", [&] {
    lstm_forward_kernel<scalar_t><<<blocks_for(e.N * e.H), kThreads, 0, stream>>>(e);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void lstm_backward_cuda(const LstmBackward& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_lstm_backward_cuda", [&] {
    lstm_backward_kernel<scalar_t><<<blocks_for(e.N * e.H), kThreads, 0, stream>>>(e);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastdstn
