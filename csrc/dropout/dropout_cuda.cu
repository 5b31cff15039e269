// CUDA kernel of per-example dropout: the mask of dropout_math.h (the same draws the CPU loop makes), one
// element per thread with a grid-stride loop, on the current stream.
#include "../common/cuda.cuh"
#include "dropout_ops.h"

namespace fastdstn {
namespace {

template <class S>
__global__ void dropout_kernel(Dropout e) {
  using A = at::opmath_type<S>;
  const S* x = static_cast<const S*>(e.x);
  const S* xt = static_cast<const S*>(e.xt);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < e.numel; k += int64_t(gridDim.x) * blockDim.x) {
    int64_t rem = k, midx = 0, b = 0;
    for (int d = e.ndim - 1; d >= 0; --d) {
      const int64_t i = rem % e.sizes[d];
      rem /= e.sizes[d];
      midx += i * e.mask_stride[d];
      if (d == e.batch_dim) b = i;
    }
    const double p = e.rate[b];
    const A keep = static_cast<A>(1.0 / (1.0 - p));
    const A mask = math::dropout_scale(math::uniform01(e.stream, static_cast<uint64_t>(midx)), p, keep);
    y[k] = static_cast<S>(static_cast<A>(x[k]) * mask);
    if (yt) yt[k] = static_cast<S>(static_cast<A>(xt[k]) * mask);
  }
}

}  // namespace

void dropout_cuda(const Dropout& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_dropout_cuda", [&] {
    dropout_kernel<scalar_t><<<blocks_for(e.numel), kThreads, 0, stream>>>(e);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastdstn
