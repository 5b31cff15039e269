// The dense family's C++ declarations: the op bodies, the descriptions of the fused epilogues that the
// device-generic op bodies (dense_ops.cpp) hand to a CPU loop (dense_cpu.h) or a CUDA kernel (dense_cuda.cu),
// and the weight products of small_gemm_cpu.cpp.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "../common/ops.h"
#include "dense_math.h"

namespace fastdstn {

// A (B, C, P) operand inside a buffer: element (b, c, p) sits at
//   data + b·batch_stride + ((c / opg)·group_stride + first + c % opg)·P + p.
// A plain contiguous (B, C, P) tensor has opg = group_stride = C, first = 0. The response half of the
// stacked conv output [z_g | z_r] (groups G, opg = C/G channels per group, interleaved per group as
// [g-part | r-part]) has group_stride = 2·opg and first = opg.
struct Operand {
  void* data = nullptr;
  int64_t batch_stride = 0;
  int64_t opg = 1, group_stride = 1, first = 0;

  FD_HD int64_t channel(int64_t c) const { return (c / opg) * group_stride + first + c % opg; }
  // Whether it is a plain contiguous (B, C, P) tensor.
  FD_HD bool plain(int64_t C, int64_t P) const { return batch_stride == C * P && first == 0 && opg == C; }
};

inline Operand plain_operand(const at::Tensor& t, int64_t C, int64_t P) {
  return Operand{t.data_ptr(), C * P, C, C, 0};
}

// Forward epilogue over y (B, C, P):
//   nonlinear (yt == nullptr): y = z_g + b_g + s⊙z_r + t⊙b_r
//   dual:                      y = z_g + b_g,  ẏ = w + s⊙z_r + t⊙b_r   (w = ẋ·W_gᵀ, or 0 when null)
// y may be z_g's buffer and ẏ may be w's buffer (updated in place: each element is read before written).
struct DenseForward {
  at::ScalarType dtype;
  int64_t B = 0, C = 0, P = 1;
  Operand zg, zr;
  const void* w = nullptr;    // contiguous (B, C, P) or null
  const void* st = nullptr;   // contiguous (B, C) or (B, 2C): [s | t]
  bool has_t = false;
  const void* bg = nullptr;   // (C) or null
  const void* br = nullptr;   // (C) or null (then has_t is false)
  void* y = nullptr;          // contiguous (B, C, P); null in the dual form when y already holds the primal
  void* yt = nullptr;         // contiguous (B, C, P) or null
  void* u = nullptr;          // contiguous (B, C, P): a compact copy of z_r for the backward, or null
};

// Backward epilogue; g is the cotangent of the output that carries s⊙z_r + t⊙b_r (contiguous (B, C, P)).
// Writes what is non-null:
//   a          s⊙g (the cotangent of z_r), as an Operand (it may be the r-half of a stacked cotangent)
//   gcopy/gsrc a copy of gsrc (the cotangent of z_g) into the g-half of a stacked cotangent
//   dst        (B, C[+C]): ∂s = Σ_p g⊙z_r, ∂t = b_r·Σ_p g
//   tg         (B, C): t·Σ_p g, whose column sums are ∂b_r (CUDA; ATen sums it)
//   dV         (C[+C], H): ∂V = dstᵀ·h, reduced over the batch inside the loop (CPU only)
//   dbr        (C): ∂b_r = Σ_b t·Σ_p g, reduced inside the loop (CPU only)
// The CPU loops reduce ∂V and ∂b_r themselves, so that dst and tg need not be written (B × 3C values at
// (B, C) = (128, 1024)) nor read back by a GEMM and a sum; the CUDA kernels write the rows and leave the
// reductions to ATen (atomics would make the sums nondeterministic).
struct DenseBackward {
  at::ScalarType dtype;
  int64_t B = 0, C = 0, P = 1;
  const void* g = nullptr;
  Operand zr;
  const void* st = nullptr;
  bool has_t = false;
  const void* br = nullptr;
  Operand a;                  // a.data null: skip
  Operand gcopy;              // gcopy.data null: skip
  const void* gsrc = nullptr; // contiguous (B, C, P), the source of gcopy
  void* dst = nullptr;
  void* tg = nullptr;
  const void* h = nullptr;    // (B, H) contiguous: the rows of h that ∂V pairs with
  int64_t H = 0;
  void* dV = nullptr;
  void* dbr = nullptr;
};

// An epilogue's buffers as pointers to the storage type S, as every CPU loop and CUDA kernel reads them.
template <class S>
struct DenseForwardData {
  const S *zg, *zr, *w, *st, *bg, *br;
  S *y, *yt, *u;
  int64_t stw;  // the row width of [s | t]
  FD_HD explicit DenseForwardData(const DenseForward& e)
      : zg(static_cast<const S*>(e.zg.data)), zr(static_cast<const S*>(e.zr.data)), w(static_cast<const S*>(e.w)),
        st(static_cast<const S*>(e.st)), bg(static_cast<const S*>(e.bg)), br(static_cast<const S*>(e.br)),
        y(static_cast<S*>(e.y)), yt(static_cast<S*>(e.yt)), u(static_cast<S*>(e.u)),
        stw(e.has_t ? 2 * e.C : e.C) {}
};

template <class S>
struct DenseBackwardData {
  const S *g, *zr, *st, *br, *h, *gsrc;
  S *a, *gcopy, *dst, *tg;
  int64_t stw;  // the row width of [s | t]
  FD_HD explicit DenseBackwardData(const DenseBackward& e)
      : g(static_cast<const S*>(e.g)), zr(static_cast<const S*>(e.zr.data)), st(static_cast<const S*>(e.st)),
        br(static_cast<const S*>(e.br)), h(static_cast<const S*>(e.h)), gsrc(static_cast<const S*>(e.gsrc)),
        a(static_cast<S*>(e.a.data)), gcopy(static_cast<S*>(e.gcopy.data)), dst(static_cast<S*>(e.dst)),
        tg(static_cast<S*>(e.tg)), stw(e.has_t ? 2 * e.C : e.C) {}
};

// The epilogues on each device: the CPU loops (dense_cpu.h, through dense_ops.cpp) and the CUDA kernels
// (dense_cuda.cu) on the current stream.
FASTDSTN_DECLARE_LOOP(dense_forward, DenseForward)
FASTDSTN_DECLARE_LOOP(dense_backward, DenseBackward)

// [s | t] = h·Vᵀ for (B, H) h and (R, H) V with few columns (H ≤ kDirectMaxH) on CPU: a direct loop.
constexpr int64_t kDirectMaxH = 16;
at::Tensor small_product_cpu(const at::Tensor& h, const at::Tensor& V);

// The linear ops' weight GEMMs (small_gemm_cpu.cpp): an AVX-512 kernel on CPU for small batches (and, in
// the backward, narrow layers), else ATen's. dense_mm: a·b (a may be any strided view), added in place
// into add_to when given; linear_products: x·W_gᵀ, x·W_rᵀ and (when ẋ is given, else undefined)
// ẋ·W_gᵀ, as contiguous tensors. small_gemm_enabled: whether the kernel can run (AVX-512 loops in use,
// FASTDSTN_SMALL_GEMM not 0).
at::Tensor dense_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& add_to = at::Tensor());
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_products(const at::Tensor& x, const std::optional<at::Tensor>& xt,
                                                               const at::Tensor& Wg, const at::Tensor& Wr);
bool small_gemm_enabled();

// The op bodies (dense_ops.cpp), device-generic: ATen GEMMs/convolutions (or, for small linear batches on CPU,
// the small-GEMM kernel) and the epilogue of the tensors' device. Schemas at the end of dense_ops.cpp.
T3 stn_linear(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
              const OptTensor& br, const Tensor& V);
T7 stn_linear_backward(const Tensor& gy, const Tensor& x, const Tensor& h, const Tensor& Wg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V, const Tensor& u, bool has_bg,
                       std::array<bool, 7> mask);
T4 stn_linear_dual(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg, const OptTensor& bg,
                   const Tensor& Wr, const OptTensor& br, const Tensor& V);
T8 stn_linear_dual_backward(const OptTensor& gy, const OptTensor& gyt, const Tensor& x, const OptTensor& xt,
                            const Tensor& eps, const Tensor& Wg, const Tensor& Wr, const OptTensor& br,
                            const Tensor& V, const Tensor& u, bool has_bg, std::array<bool, 8> mask);

T3 stn_conv2d(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
              const OptTensor& br, const Tensor& V, at::IntArrayRef stride, at::IntArrayRef padding,
              at::IntArrayRef dilation, int64_t groups);
T7 stn_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& h, const Tensor& Wg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V, const Tensor& u,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool has_bg, std::array<bool, 7> mask);
T4 stn_conv2d_dual(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg, const OptTensor& bg,
                   const Tensor& Wr, const OptTensor& br, const Tensor& V, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups);
T8 stn_conv2d_dual_backward(const OptTensor& gy, const OptTensor& gyt, const Tensor& x, const OptTensor& xt,
                            const Tensor& eps, const Tensor& Wg, const Tensor& Wr, const OptTensor& br,
                            const Tensor& V, const Tensor& u, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool has_bg,
                            std::array<bool, 8> mask);

}  // namespace fastdstn
