// CUDA kernels of the dense ops' fused epilogues (the op bodies of dense_ops.cpp run the GEMMs through cuBLAS
// and the convolutions through cuDNN, via ATen, and call these launchers). Each kernel applies the formulas of
// dense_math.h (the same code the CPU loops run) in the op-math type (float for float16/bfloat16), one element
// per thread with a grid-stride loop, on the current stream.
#include "../common/cuda.cuh"
#include "dense_ops.h"

namespace fastdstn {
namespace {

namespace m = fastdstn::math;

// ---------------------------------------------------------------- dense forward epilogue
template <class S>
__global__ void dense_forward_kernel(DenseForward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.B * e.C * e.P;
  const auto [zg, zr, w, st, bg, br, y, yt, u, stw] = DenseForwardData<S>(e);
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n; i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t p = i % e.P, q = i / e.P, c = q % e.C, b = q / e.C;
    const A s = static_cast<A>(st[b * stw + c]);
    const A t = e.has_t ? static_cast<A>(st[b * stw + e.C + c]) : A(0);
    const A vzg = static_cast<A>(zg[b * e.zg.batch_stride + e.zg.channel(c) * e.P + p]);
    const S zr_i = zr[b * e.zr.batch_stride + e.zr.channel(c) * e.P + p];
    const A vzr = static_cast<A>(zr_i);
    if (u) u[i] = zr_i;
    const A vbg = ld<A>(bg, c), vbr = ld<A>(br, c);
    if (yt == nullptr) {
      y[i] = static_cast<S>(m::stn_output(vzg, vbg, s, vzr, t, vbr));
    } else {
      const A vw = ld<A>(w, i);
      if (y) y[i] = static_cast<S>(m::stn_primal(vzg, vbg));
      yt[i] = static_cast<S>(m::stn_tangent(vw, s, vzr, t, vbr));
    }
  }
}

// ---------------------------------------------------------------- dense backward epilogue
// One warp per (example, channel) plane; lanes stride over the P pixels and reduce Σ g and Σ g⊙z_r.
template <class S>
__global__ void dense_backward_kernel(DenseBackward e) {
  using A = at::opmath_type<S>;
  const int64_t planes = e.B * e.C;
  const int lane = threadIdx.x % 32;
  const int64_t warps_per_grid = int64_t(gridDim.x) * (blockDim.x / 32);
  const auto [g, zr, st, br, h, gsrc, a, gcopy, dst, tg, stw] = DenseBackwardData<S>(e);
  for (int64_t q = (blockIdx.x * int64_t(blockDim.x) + threadIdx.x) / 32; q < planes; q += warps_per_grid) {
    const int64_t b = q / e.C, c = q % e.C;
    const A s = static_cast<A>(st[b * stw + c]);
    const S* g_p = g + q * e.P;
    const S* zr_p = zr + b * e.zr.batch_stride + e.zr.channel(c) * e.P;
    A sg = 0, sgz = 0;
    for (int64_t p = lane; p < e.P; p += 32) {
      const A vg = static_cast<A>(g_p[p]);
      if (a) a[b * e.a.batch_stride + e.a.channel(c) * e.P + p] = static_cast<S>(m::stn_response_cotangent(s, vg));
      if (gcopy) gcopy[b * e.gcopy.batch_stride + e.gcopy.channel(c) * e.P + p] = gsrc[q * e.P + p];
      sg += vg;
      sgz += m::stn_scale_grad(vg, static_cast<A>(zr_p[p]));
    }
    for (int off = 16; off > 0; off /= 2) {
      sg += __shfl_down_sync(0xffffffffu, sg, off);
      sgz += __shfl_down_sync(0xffffffffu, sgz, off);
    }
    if (lane == 0) {
      if (dst) {
        dst[b * stw + c] = static_cast<S>(sgz);
        if (e.has_t) dst[b * stw + e.C + c] = static_cast<S>(sg * static_cast<A>(br[c]));
      }
      if (tg) tg[q] = static_cast<S>(sg * static_cast<A>(st[b * stw + e.C + c]));
    }
  }
}

// P == 1 (the linear layer): one thread per element, no reduction.
template <class S>
__global__ void dense_backward_rows_kernel(DenseBackward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.B * e.C;
  const auto [g, zr, st, br, h, gsrc, a, gcopy, dst, tg, stw] = DenseBackwardData<S>(e);
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < n; q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t b = q / e.C, c = q % e.C;
    const A vg = static_cast<A>(g[q]), s = static_cast<A>(st[b * stw + c]);
    if (a) a[b * e.a.batch_stride + e.a.channel(c)] = static_cast<S>(m::stn_response_cotangent(s, vg));
    if (gcopy) gcopy[b * e.gcopy.batch_stride + e.gcopy.channel(c)] = gsrc[q];
    if (dst) {
      dst[b * stw + c] = static_cast<S>(m::stn_scale_grad(vg, static_cast<A>(zr[b * e.zr.batch_stride + e.zr.channel(c)])));
      if (e.has_t) dst[b * stw + e.C + c] = static_cast<S>(vg * static_cast<A>(br[c]));
    }
    if (tg) tg[q] = static_cast<S>(vg * static_cast<A>(st[b * stw + e.C + c]));
  }
}

}  // namespace

void dense_forward_cuda(const DenseForward& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_dense_forward_cuda", [&] {
    dense_forward_kernel<scalar_t><<<blocks_for(e.B * e.C * e.P), kThreads, 0, stream>>>(e);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void dense_backward_cuda(const DenseBackward& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_dense_backward_cuda", [&] {
    if (e.P == 1) {
      dense_backward_rows_kernel<scalar_t><<<blocks_for(e.B * e.C), kThreads, 0, stream>>>(e);
    } else {
      dense_backward_kernel<scalar_t><<<blocks_for(e.B * e.C * 32), kThreads, 0, stream>>>(e);
    }
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastdstn
