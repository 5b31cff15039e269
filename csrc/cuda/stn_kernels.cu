// CUDA kernels of the STN ops and their registration for the CUDA dispatch key.
//
// The op bodies (GEMMs through cuBLAS, convolutions through cuDNN, via ATen) are the device-generic
// ones of stn_dense.cpp / stn_pointwise.cpp; they call the launchers below for the fused epilogues.
// Each kernel applies the formulas of stn_math.h (the same code the CPU loops run) in the op-math type
// (float for float16/bfloat16), one element per thread with a grid-stride loop, on the current stream.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAStream.h>
#include <c10/cuda/CUDAException.h>
#include <torch/library.h>

#include "../stn_ops.h"

namespace fastdstn {
namespace {

namespace m = fastdstn::math;

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) {
  const int64_t max_blocks = 65535LL * 8;  // plenty to fill an H100; the loops are grid-stride
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((n + kThreads - 1) / kThreads, max_blocks)));
}

template <class A, class S>
__device__ __forceinline__ A ld(const S* p, int64_t i) {
  return p ? static_cast<A>(p[i]) : A(0);
}

__device__ __forceinline__ float dexp(float x) { return __expf(x); }
__device__ __forceinline__ double dexp(double x) { return ::exp(x); }
__device__ __forceinline__ float dtanh(float x) { return ::tanhf(x); }
__device__ __forceinline__ double dtanh(double x) { return ::tanh(x); }
template <class A>
__device__ __forceinline__ A dsigmoid(A x) {
  return A(1) / (A(1) + dexp(-x));
}

// ---------------------------------------------------------------- dense forward epilogue
template <class S>
__global__ void dense_forward_kernel(DenseForward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.B * e.C * e.P, stw = e.has_t ? 2 * e.C : e.C;
  const S* st = static_cast<const S*>(e.st);
  const S* bg = static_cast<const S*>(e.bg);
  const S* br = static_cast<const S*>(e.br);
  const S* zg = static_cast<const S*>(e.zg.data);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* w = static_cast<const S*>(e.w);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  S* u = static_cast<S*>(e.u);
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
  const int64_t planes = e.B * e.C, stw = e.has_t ? 2 * e.C : e.C;
  const int lane = threadIdx.x % 32;
  const int64_t warps_per_grid = int64_t(gridDim.x) * (blockDim.x / 32);
  const S* g = static_cast<const S*>(e.g);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* st = static_cast<const S*>(e.st);
  const S* br = static_cast<const S*>(e.br);
  const S* gsrc = static_cast<const S*>(e.gsrc);
  S* a = static_cast<S*>(e.a.data);
  S* gcopy = static_cast<S*>(e.gcopy.data);
  S* dst = static_cast<S*>(e.dst);
  S* tg = static_cast<S*>(e.tg);
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
  const int64_t n = e.B * e.C, stw = e.has_t ? 2 * e.C : e.C;
  const S* g = static_cast<const S*>(e.g);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* st = static_cast<const S*>(e.st);
  const S* br = static_cast<const S*>(e.br);
  const S* gsrc = static_cast<const S*>(e.gsrc);
  S* a = static_cast<S*>(e.a.data);
  S* gcopy = static_cast<S*>(e.gcopy.data);
  S* dst = static_cast<S*>(e.dst);
  S* tg = static_cast<S*>(e.tg);
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

// ---------------------------------------------------------------- LSTM cell
template <class S>
__global__ void lstm_forward_kernel(LstmForward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.N * e.H, H = e.H;
  const S *G = static_cast<const S*>(e.gates), *Gt = static_cast<const S*>(e.gates_t);
  const S *C0 = static_cast<const S*>(e.c), *Ct = static_cast<const S*>(e.c_t);
  S *Ho = static_cast<S*>(e.h), *Hto = static_cast<S*>(e.ht), *Co = static_cast<S*>(e.c_new);
  S* Cto = static_cast<S*>(e.ct_new);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / H, j = k % H, q = r * 4 * H + j;
    const A i = dsigmoid(static_cast<A>(G[q])), f = dsigmoid(static_cast<A>(G[q + H]));
    const A g = dtanh(static_cast<A>(G[q + 2 * H])), o = dsigmoid(static_cast<A>(G[q + 3 * H]));
    const A c = static_cast<A>(C0[k]);
    const A cn = m::lstm_cell(i, f, g, c), tc = dtanh(cn);
    Co[k] = static_cast<S>(cn);
    Ho[k] = static_cast<S>(o * tc);
    if (Hto) {
      const A cnt = m::lstm_cell_tangent(i, f, g, c, ld<A>(Gt, q), ld<A>(Gt, q + H), ld<A>(Gt, q + 2 * H), ld<A>(Ct, k));
      Cto[k] = static_cast<S>(cnt);
      Hto[k] = static_cast<S>(m::lstm_hidden_tangent(o, tc, ld<A>(Gt, q + 3 * H), cnt));
    }
  }
}

template <class S>
__global__ void lstm_backward_kernel(LstmBackward e) {
  using A = at::opmath_type<S>;
  const int64_t n = e.N * e.H, H = e.H;
  const S *G = static_cast<const S*>(e.gates), *Gt = static_cast<const S*>(e.gates_t);
  const S *C0 = static_cast<const S*>(e.c), *Ct = static_cast<const S*>(e.c_t);
  const S *gh = static_cast<const S*>(e.gh), *ght = static_cast<const S*>(e.ght);
  const S *gc = static_cast<const S*>(e.gc), *gct = static_cast<const S*>(e.gct);
  S *dG = static_cast<S*>(e.dgates), *dGt = static_cast<S*>(e.dgates_t);
  S *dC = static_cast<S*>(e.dc), *dCt = static_cast<S*>(e.dc_t);
  for (int64_t k = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; k < n; k += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = k / H, j = k % H, q = r * 4 * H + j;
    const A i = dsigmoid(static_cast<A>(G[q])), f = dsigmoid(static_cast<A>(G[q + H]));
    const A g = dtanh(static_cast<A>(G[q + 2 * H])), o = dsigmoid(static_cast<A>(G[q + 3 * H]));
    const A c = static_cast<A>(C0[k]);
    const A tc = dtanh(m::lstm_cell(i, f, g, c));
    const auto d = m::lstm_backward(i, f, g, o, c, tc, ld<A>(Gt, q), ld<A>(Gt, q + H), ld<A>(Gt, q + 2 * H),
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

// ---------------------------------------------------------------- dropout
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
    const A mask = m::dropout_scale(m::uniform01(e.stream, static_cast<uint64_t>(midx)), p, keep);
    y[k] = static_cast<S>(static_cast<A>(x[k]) * mask);
    if (yt) yt[k] = static_cast<S>(static_cast<A>(xt[k]) * mask);
  }
}

#define FD_DISPATCH(dtype, name, ...) \
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, dtype, name, __VA_ARGS__)

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

void dropout_cuda(const Dropout& e) {
  const auto stream = c10::cuda::getCurrentCUDAStream();
  FD_DISPATCH(e.dtype, "fastdstn_dropout_cuda", [&] {
    dropout_kernel<scalar_t><<<blocks_for(e.numel), kThreads, 0, stream>>>(e);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

}  // namespace fastdstn

TORCH_LIBRARY_IMPL(fastdstn, CUDA, m) {
  m.impl("stn_linear", &fastdstn::stn_linear);
  m.impl("stn_linear_backward", &fastdstn::stn_linear_backward);
  m.impl("stn_linear_dual", &fastdstn::stn_linear_dual);
  m.impl("stn_linear_dual_backward", &fastdstn::stn_linear_dual_backward);
  m.impl("stn_conv2d", &fastdstn::stn_conv2d);
  m.impl("stn_conv2d_backward", &fastdstn::stn_conv2d_backward);
  m.impl("stn_conv2d_dual", &fastdstn::stn_conv2d_dual);
  m.impl("stn_conv2d_dual_backward", &fastdstn::stn_conv2d_dual_backward);
  m.impl("lstm_cell_dual", &fastdstn::lstm_cell_dual);
  m.impl("lstm_cell_dual_backward", &fastdstn::lstm_cell_dual_backward);
  m.impl("dropout_dual", &fastdstn::dropout_dual);
}
