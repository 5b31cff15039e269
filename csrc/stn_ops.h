// Shared declarations of the compiled STN ops: the epilogue descriptions that the device-generic op
// bodies (stn_dense.cpp, stn_pointwise.cpp) hand to a CPU loop or a CUDA kernel, and the op bodies
// themselves, registered for CPU in library.cpp and for CUDA in cuda/stn_kernels.cu.
#pragma once

#include <ATen/ATen.h>

#include <array>
#include <cstdint>
#include <tuple>
#include <vector>

#include "stn_math.h"

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

// CPU loops (epilogue_cpu.cpp).
// [s | t] = h·Vᵀ for (B, H) h and (R, H) V with few columns (H ≤ kDirectMaxH): a direct loop.
constexpr int64_t kDirectMaxH = 16;
at::Tensor small_product_cpu(const at::Tensor& h, const at::Tensor& V);
// The instruction set whose copy of the CPU loops runs: "avx512", "avx2" or "baseline".
const char* cpu_isa_name();
// The linear ops' weight GEMMs (small_gemm_cpu.cpp): an AVX-512 kernel on CPU for small batches (and, in
// the backward, narrow layers), else ATen's. dense_mm: a·b (a may be any strided view), added in place
// into add_to when given; linear_products: x·W_gᵀ, x·W_rᵀ and (when ẋ is given, else undefined)
// ẋ·W_gᵀ, as contiguous tensors. small_gemm_enabled: whether the kernel can run (AVX-512 loops in use,
// FASTDSTN_SMALL_GEMM not 0).
at::Tensor dense_mm(const at::Tensor& a, const at::Tensor& b, const at::Tensor& add_to = at::Tensor());
std::tuple<at::Tensor, at::Tensor, at::Tensor> linear_products(const at::Tensor& x, const std::optional<at::Tensor>& xt,
                                                               const at::Tensor& Wg, const at::Tensor& Wr);
bool small_gemm_enabled();
void dense_forward_cpu(const DenseForward& e);
void dense_backward_cpu(const DenseBackward& e);
void lstm_forward_cpu(const LstmForward& e);
void lstm_backward_cpu(const LstmBackward& e);
void dropout_cpu(const Dropout& e);

#ifdef FASTDSTN_WITH_CUDA
// CUDA kernels on the current stream (cuda/stn_kernels.cu).
void dense_forward_cuda(const DenseForward& e);
void dense_backward_cuda(const DenseBackward& e);
void lstm_forward_cuda(const LstmForward& e);
void lstm_backward_cuda(const LstmBackward& e);
void dropout_cuda(const Dropout& e);
#endif

// ---- Op bodies: device-generic (ATen GEMM/convolution or, for small linear batches on CPU, the
// small-GEMM kernel, + the epilogue of the tensors' device) ----
using Tensor = at::Tensor;
using OptTensor = std::optional<Tensor>;
using T3 = std::tuple<Tensor, Tensor, Tensor>;
using T4 = std::tuple<Tensor, Tensor, Tensor, Tensor>;
using T7 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;
using T8 = std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor>;

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

T4 lstm_cell_dual(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t);
T4 lstm_cell_dual_backward(const OptTensor& gh, const OptTensor& ght, const OptTensor& gc, const OptTensor& gct,
                           const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t,
                           std::array<bool, 4> mask);

std::tuple<Tensor, Tensor> dropout_dual(const Tensor& x, const OptTensor& xt, const Tensor& rate, int64_t seed,
                                        int64_t batch_dim, at::IntArrayRef shared_dims);

}  // namespace fastdstn
