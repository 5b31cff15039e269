// What every family's CUDA kernels (<family>/<family>_cuda.cu) share: the launch shape (one element per thread,
// grid-stride loops, on the current stream), a load that reads an absent operand as zero, and the dtypes they
// compute (float16 and bfloat16 in float: at::opmath_type).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>

namespace fastdstn {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  const int64_t max_blocks = 65535LL * 8;  // plenty to fill an H100; the loops are grid-stride
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks)));
}

template <class A, class S>
__device__ __forceinline__ A ld(const S* p, int64_t i) {
  return p ? static_cast<A>(p[i]) : A(0);
}

#define FD_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

}  // namespace fastdstn
