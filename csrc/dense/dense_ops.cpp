// The STN dense ops (docs/METHOD.md §3, §5): stn_linear, stn_linear_dual, stn_conv2d, stn_conv2d_dual and
// their backwards: schemas, op bodies, their registration for the CPU and CUDA keys, and the CPU loops.
// The bodies are device-generic: GEMMs and convolutions go through ATen (MKL/oneDNN on CPU, cuBLAS/cuDNN on
// CUDA), the elementwise remainder through ONE fused epilogue of the tensors' device. The linear ops' weight GEMMs call linear_products / dense_mm (small_gemm_cpu.cpp), which run an AVX-512
// kernel instead of ATen on CPU for batches of at most 64 rows (and, in the backward, layers at most 64 wide).
//
// GEMM plan (linear). Forward: z_g = x·W_gᵀ, z_r = x·W_rᵀ, w = ẋ·W_gᵀ and the small [s|t] = ε·Vᵀ, then
// the epilogue writes y and ẏ in place over z_g and w (the small-batch kernel computes the three
// products in one pass, sharing each load of xᵀ and each broadcast of W_g). Stacking [W_g; W_r] along N
// would need a copy of both weight matrices on every call (they are separate parameters), which costs
// more than it saves on 2 cores (8 MB per call at 1024x1024); sharing x between two GEMM calls costs
// nothing. The backward accumulates into one output with beta = 1 (addmm_) instead of concatenating
// cotangents along K, which would copy activations: e.g. ∂x = ∂y·W_g + (s⊙∂ẏ)·W_r is mm + addmm_.
// Conv: the forward's two convolutions are one convolution over [W_g; W_r] stacked along the output
// channels (per group) on CUDA, two on CPU (conv_forward says why); on CPU the dual form's conv(ẋ, W_g) joins
// conv(x, W_g) in one convolution of [x; ẋ] where W_g has 4x as many elements as x (batch_with_tangent says
// why); the backward stacks the cotangents
// [∂z_g | ∂z_r] in the epilogue so that one convolution_backward serves ∂x, ∂W_g and ∂W_r together.
// The forward keeps only u = z_r for the backward, which never reads z_g: half of what the stacked output
// would keep alive (SimpleCNN's Δ-STN training step saved 67.5 MB against the reference's 59.8).
//
// The products with the few hyperparameter columns (H ≤ 16: [s|t] = h·Vᵀ, ∂V = ∂[s|t]ᵀ·h) are loops on
// CPU, the latter inside the backward epilogue: MKL took 152 µs for (128 × 3)·(3 × 2048) and 69 µs for
// ∂V at the same size (1 thread), about ten times the memory pass. On CUDA they are cuBLAS GEMMs, ∂V as
// (hᵀ·∂[s|t])ᵀ.
//
// Every backward computes only the gradients in `mask` (autograd's needs_input_grad); a gradient
// that is not asked for comes back as an empty tensor.
//
// Auxiliary outputs saved for the backward (dense_autograd.cpp): u = x·W_rᵀ (linear) or conv(x, W_r) (conv);
// [s | t] = h·Vᵀ is returned too but recomputed by the backward. A `bool[k] mask` is autograd's
// needs_input_grad; gradients not asked for come back as empty tensors, as does an absent ẏ.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common/isa.h"
#include "../common/ops.h"
#include "dense_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../dense/dense_cpu.h"
#include "../common/isa_copies.h"

void dense_forward_cpu(const DenseForward& e) { FASTDSTN_CPU_CALL(dense_forward, e) }
void dense_backward_cpu(const DenseBackward& e) { FASTDSTN_CPU_CALL(dense_backward, e) }

static void small_product_into(const at::Tensor& h, const at::Tensor& V, const at::Tensor& out) {
  FASTDSTN_CPU_CALL(small_product, h, V, out)
}

at::Tensor small_product_cpu(const at::Tensor& h, const at::Tensor& V) {
  const at::Tensor hc = h.contiguous();
  at::Tensor out = at::empty({h.size(0), V.size(0)}, h.options());
  if (h.size(1) == 0) return out.zero_();
  small_product_into(hc, V, out);
  return out;
}

namespace {

// ---------------------------------------------------------------- argument checks
void check_dense(const char* op, const Tensor& x, const OptTensor& xt, const char* h_name, const Tensor& h,
                 const Tensor& Wg, const OptTensor& bg, const Tensor& Wr, const OptTensor& br, const Tensor& V,
                 bool spatial, int64_t groups) {
  const auto same_kind_as_x = [&](const char* name, const Tensor& t) { check_same_kind(op, name, t, x, "x"); };
  const int64_t nd = spatial ? 4 : 2;
  TORCH_CHECK(x.dim() == nd, op, ": x: expected a ", nd, "-d tensor, received shape ", x.sizes());
  TORCH_CHECK(Wg.dim() == nd, op, ": Wg: expected a ", nd, "-d tensor, received shape ", Wg.sizes());
  TORCH_CHECK(Wr.sizes() == Wg.sizes(), op, ": Wr: expected shape ", Wg.sizes(), " (the shape of Wg), received ",
              Wr.sizes());
  check_floating(op, "x", x);
  const int64_t C = Wg.size(0);
  if (spatial) {
    TORCH_CHECK(groups >= 1 && C % groups == 0, op, ": groups: expected a divisor of the ", C,
                " output channels, received ", groups);
    TORCH_CHECK(x.size(1) == Wg.size(1) * groups, op, ": x: expected ", Wg.size(1) * groups,
                " input channels (Wg is ", Wg.sizes(), ", groups=", groups, "), received shape ", x.sizes());
  } else {
    TORCH_CHECK(x.size(1) == Wg.size(1), op, ": x: expected ", Wg.size(1), " input features (Wg is ", Wg.sizes(),
                "), received shape ", x.sizes());
  }
  if (xt) {
    TORCH_CHECK(xt->sizes() == x.sizes(), op, ": xt: expected shape ", x.sizes(), " (the shape of x), received ",
                xt->sizes());
    same_kind_as_x("xt", *xt);
  }
  if (bg) {
    TORCH_CHECK(bg->dim() == 1 && bg->size(0) == C, op, ": bg: expected shape [", C,
                "] (one entry per output unit), received ", bg->sizes());
    same_kind_as_x("bg", *bg);
  }
  if (br) {
    TORCH_CHECK(br->dim() == 1 && br->size(0) == C, op, ": br: expected shape [", C,
                "] (one entry per output unit), received ", br->sizes());
    same_kind_as_x("br", *br);
  }
  const int64_t rows = br ? 2 * C : C;
  TORCH_CHECK(V.dim() == 2 && V.size(0) == rows, op, ": V: expected ", rows, " rows (",
              br ? "[s | t]: 2*out, since br is given" : "s: out, since br is None", "), received shape ", V.sizes());
  TORCH_CHECK(h.dim() == 2 && h.size(1) == V.size(1), op, ": ", h_name, ": expected shape [", x.size(0), ", ",
              V.size(1), "] (one row per example, V's hyperparameter columns), received ", h.sizes());
  TORCH_CHECK(h.size(0) == x.size(0), op, ": ", h_name, ": expected ", x.size(0),
              " rows (one per example of x), received shape ", h.sizes());
  same_kind_as_x(h_name, h);
  same_kind_as_x("Wg", Wg);
  same_kind_as_x("Wr", Wr);
  same_kind_as_x("V", V);
}

// The fused forward epilogue (DenseForward) of every dense op: y (B, C, P) from z_g, z_r, [s|t] and the
// biases; with yt defined the dual form, whose w = ẋ·W_gᵀ was computed into yt itself when `w_in_yt`
// (zero otherwise); with u defined, z_r is copied into it on the way. `y_final`: the dual form's y
// already holds the primal (a convolution wrote it), so only ẏ is written.
void forward_epilogue(const Tensor& like, int64_t P, const Operand& zg, const Operand& zr, const Tensor& st,
                      const OptTensor& bg, const OptTensor& br, const Tensor& y, const Tensor& yt, bool w_in_yt,
                      const Tensor& u = Tensor(), bool y_final = false) {
  const Tensor bgc = contiguous_or_undefined(bg), brc = contiguous_or_undefined(br);
  DenseForward e{like.scalar_type()};
  e.B = y.size(0);
  e.C = y.size(1);
  e.P = P;
  e.zg = zg;
  e.zr = zr;
  e.st = st.data_ptr();
  e.has_t = brc.defined();
  e.bg = ptr_or_null(bgc);
  e.br = ptr_or_null(brc);
  e.y = y_final ? nullptr : y.data_ptr();
  if (yt.defined()) {
    e.yt = yt.data_ptr();
    e.w = w_in_yt ? yt.data_ptr() : nullptr;
  }
  if (u.defined()) e.u = u.data_ptr();
  if (e.B * e.C * e.P > 0) FASTDSTN_RUN(like, e, dense_forward);
}

// [s | t] = h·Vᵀ.
Tensor scale_shift(const Tensor& h, const Tensor& V) {
  if (!h.is_cuda() && V.size(1) <= kDirectMaxH) return small_product_cpu(h, V);
  return at::mm(h, V.t()).contiguous();
}

// The gradients that flow through [s | t] (∂h = ∂[s|t]·V, ∂V, ∂b_r), set up on a backward epilogue
// and completed after it ran. On CPU the epilogue reduces ∂V and ∂b_r over the batch itself and
// writes ∂[s|t] only when ∂h is asked for; on CUDA it writes ∂[s|t] and t·Σ_p g, reduced here by ATen.
class ScaleShiftGrads {
 public:
  ScaleShiftGrads(DenseBackward& e, const Tensor& h, const Tensor& st, const Tensor& V, bool need_dh, bool need_dV,
                  bool need_dbr)
      : need_dh_(need_dh), need_dV_(need_dV), need_dbr_(need_dbr) {
    const bool in_loop = !h.is_cuda();
    // A loop over an empty batch adds nothing: its sums start at zero.
    const auto sums = [&](at::IntArrayRef shape) {
      return e.B * e.P == 0 ? at::zeros(shape, st.options()) : at::empty(shape, st.options());
    };
    if (need_dh || (need_dV && !in_loop)) dst_ = at::empty_like(st);
    if (need_dbr && !in_loop) tg_ = at::empty({e.B, e.C}, st.options());
    if (need_dV && in_loop) {
      h_ = h.contiguous();
      dV_ = sums(V.sizes());
      e.h = h_.data_ptr();
      e.H = h_.size(1);
      e.dV = dV_.data_ptr();
    }
    if (need_dbr && in_loop) {
      dbr_ = sums({e.C});
      e.dbr = dbr_.data_ptr();
    }
    e.dst = dst_.defined() ? dst_.data_ptr() : nullptr;
    e.tg = tg_.defined() ? tg_.data_ptr() : nullptr;
  }

  bool any() const { return need_dh_ || need_dV_ || need_dbr_; }

  // ∂h, ∂V, ∂b_r (undefined where not asked for), once the epilogue has run.
  std::tuple<Tensor, Tensor, Tensor> finish(const Tensor& h, const Tensor& V) {
    Tensor dh = need_dh_ ? at::mm(dst_, V) : Tensor();
    if (need_dV_ && !dV_.defined()) dV_ = at::mm(h.t(), dst_).t().contiguous();
    if (need_dbr_ && !dbr_.defined()) dbr_ = tg_.sum(0);
    return {dh, dV_, dbr_};
  }

 private:
  const bool need_dh_, need_dV_, need_dbr_;
  Tensor h_, dst_, tg_, dV_, dbr_;
};

// Fills the gradients asked for but left undefined (their cotangents were absent) with zeros, and
// the ones not asked for with empty tensors.
template <size_t N>
void finish_grads(std::array<Tensor*, N> grads, std::array<const Tensor*, N> inputs, std::array<bool, N> mask,
                  const Tensor& like) {
  for (size_t i = 0; i < N; ++i) {
    Tensor& g = *grads[i];
    if (!mask[i] || inputs[i] == nullptr || !inputs[i]->defined()) {
      g = at::empty({0}, like.options());
    } else if (!g.defined()) {
      g = at::zeros_like(*inputs[i], at::MemoryFormat::Contiguous);
    }
  }
}

// ---------------------------------------------------------------- conv helpers
Tensor conv(const Tensor& x, const Tensor& W, at::IntArrayRef stride, at::IntArrayRef padding,
            at::IntArrayRef dilation, int64_t groups) {
  return at::convolution(x, W, std::nullopt, stride, padding, dilation, false, {0, 0}, groups);
}

// [W_g; W_r] along the output channels, interleaved per group so that the stacked convolution keeps
// each group's input channels: group k's outputs are [W_g rows of k | W_r rows of k].
Tensor stack_weights(const Tensor& Wg, const Tensor& Wr, int64_t groups) {
  if (groups == 1) return at::cat({Wg, Wr}, 0);
  auto shape = Wg.sizes().vec();
  std::vector<int64_t> grouped = {groups, shape[0] / groups};
  grouped.insert(grouped.end(), shape.begin() + 1, shape.end());
  auto stacked = at::cat({Wg.reshape(grouped), Wr.reshape(grouped)}, 1);
  shape[0] *= 2;
  return stacked.reshape(shape);
}

// The (∂W_g, ∂W_r) halves of a gradient of the stacked weights.
std::pair<Tensor, Tensor> unstack_weights(const Tensor& dW, int64_t groups) {
  auto shape = dW.sizes().vec();
  const int64_t C = shape[0] / 2, opg = C / groups;
  std::vector<int64_t> grouped = {groups, 2 * opg};
  grouped.insert(grouped.end(), shape.begin() + 1, shape.end());
  auto g = dW.reshape(grouped);
  shape[0] = C;
  return {g.narrow(1, 0, opg).reshape(shape), g.narrow(1, opg, opg).reshape(shape)};
}

// Half `half` (0: general, 1: response) of a stacked (B, 2C, P) buffer, as an Operand.
Operand stacked_operand(const Tensor& z, int64_t C, int64_t P, int64_t groups, int half) {
  const int64_t opg = C / groups;
  return Operand{z.data_ptr(), 2 * C * P, opg, 2 * opg, half ? opg : 0};
}

// The forward of both conv ops: (y, ẏ, u = z_r) for the dual form, whose ẏ is written over w = conv(ẋ, W_g)
// when w is defined; (y, undefined, u) for the nonlinear form.
// CPU: two convolutions written straight into y (b_g added by the convolution) and u; the epilogue then
// reads u (and w) and writes ẏ, or adds s⊙u + t⊙b_r into y: 2–3 passes over (B, C, H, W) against the
// stacked form's 5 (read z_g, z_r; write y, ẏ, u). On CPU the one stacked convolution is no reliable gain
// (`python benchmarks/bench_cpu_env.py stacking`, 2 threads, four runs: SimpleCNN conv1 equal within 3%,
// conv2 2–9% faster stacked, the VGG 64→64 layer 3% faster to 18% slower stacked), and with two the
// forward + backward op went from 1.01–1.14x the reference to 1.25–1.34x at conv1, 1.02–1.04x to
// 1.03–1.06x at conv2 (benchmarks/history/ops_cpp.md). CUDA: ONE convolution over [W_g; W_r] stacked
// along the output channels (one cuDNN call instead of two; the extra epilogue passes are cheap at HBM
// bandwidth; not re-measured).
T3 conv_forward(const Tensor& x, const Tensor& st, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
                const OptTensor& br, at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation,
                int64_t groups, bool dual, const Tensor& w) {
  const int64_t C = Wg.size(0);
  const auto tangent_over = [&](const Tensor& y) {
    return !dual ? Tensor() : w.defined() ? w : at::empty_like(y);
  };
  if (!x.is_cuda()) {
    Tensor y = at::convolution(x, Wg, bg, stride, padding, dilation, false, {0, 0}, groups).contiguous();
    Tensor u = conv(x, Wr, stride, padding, dilation, groups).contiguous();
    Tensor yt = tangent_over(y);
    const int64_t P = y.size(2) * y.size(3);
    forward_epilogue(x, P, plain_operand(y, C, P), plain_operand(u, C, P), st, std::nullopt, br, y, yt,
                     w.defined(), Tensor(), /*y_final=*/dual);
    return {y, yt, u};
  }
  const Tensor z = conv(x, stack_weights(Wg, Wr, groups), stride, padding, dilation, groups).contiguous();
  const int64_t P = z.size(2) * z.size(3);
  Tensor y = at::empty({x.size(0), C, z.size(2), z.size(3)}, z.options()), u = at::empty_like(y);
  Tensor yt = tangent_over(y);
  forward_epilogue(x, P, stacked_operand(z, C, P, groups, 0), stacked_operand(z, C, P, groups, 1), st, bg, br, y,
                   yt, w.defined(), u);
  return {y, yt, u};
}

// CPU, a layer with at least 4x as many weights as input elements (ResNet-18's last two stages at B16, 64 px):
// z_g = conv(x, W_g) and w = conv(ẋ, W_g) as ONE convolution of [x; ẋ] stacked along the batch, which reads W_g
// once. Two convolutions against one (concatenation included), `python benchmarks/bench_cpu_env.py batching`, B16,
// 2 threads, two runs: the last stage's 512→512 layer at 2×2 (72x) 3.10/2.98 ms against 2.27/2.34 ms, its first,
// stride-2 256→512 layer at 4×4 (18x) 2.06/2.07 against 1.46/1.48 ms, 256→256 at 4×4 (9x) 2.00/2.13 against
// 1.82/2.12 ms; at 128→128 and 8×8 (1.1x) 1.81/2.01 against 1.86/1.98 ms, and where the input outnumbers the
// weights batching loses (64→64 at 16×16: 2.04/2.05 against 2.27/2.21 ms).
bool batch_with_tangent(const Tensor& x, const Tensor& Wg) { return !x.is_cuda() && Wg.numel() >= 4 * x.numel(); }

// The dual forward of batch_with_tangent's layers: (y, ẏ, u = z_r). The epilogue adds b_g to y and turns w, a copy
// of the tangent half of the batched output, into ẏ in place.
T3 conv_dual_forward_batched(const Tensor& x, const Tensor& xt, const Tensor& st, const Tensor& Wg,
                             const OptTensor& bg, const Tensor& Wr, const OptTensor& br, at::IntArrayRef stride,
                             at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  const int64_t B = x.size(0), C = Wg.size(0);
  const Tensor z = conv(at::cat({x, xt}), Wg, stride, padding, dilation, groups).contiguous();
  Tensor yt = z.narrow(0, B, B).clone();
  Tensor y = at::empty_like(yt);
  Tensor u = conv(x, Wr, stride, padding, dilation, groups).contiguous();
  const int64_t P = y.size(2) * y.size(3);
  forward_epilogue(x, P, plain_operand(z, C, P), plain_operand(u, C, P), st, bg, br, y, yt, /*w_in_yt=*/true);
  return {y, yt, u};
}

// The conv backward epilogue over g, the cotangent of the output that carries s⊙u + t⊙b_r: a = s⊙g goes into
// the response half of a new stacked cotangent gz = [gsrc | a] when `stacked` (one convolution_backward then
// serves ∂x, ∂W_g and ∂W_r), else into a plain `a` when `need_a`; e's reductions were set by the caller.
// Returns (gz, a), undefined where not made.
std::pair<Tensor, Tensor> conv_response_epilogue(DenseBackward& e, const Tensor& g, const Tensor& gsrc, const Tensor& u,
                                                 const Tensor& st, const Tensor& brc, int64_t groups, bool stacked,
                                                 bool need_a, bool reductions) {
  Tensor gz, a;
  if (stacked) {
    gz = at::empty({e.B, 2 * e.C, g.size(2), g.size(3)}, g.options());
    e.a = stacked_operand(gz, e.C, e.P, groups, 1);
    e.gcopy = stacked_operand(gz, e.C, e.P, groups, 0);
    e.gsrc = gsrc.data_ptr();
  } else if (need_a) {
    a = at::empty_like(g);
    e.a = plain_operand(a, e.C, e.P);
  }
  e.g = g.data_ptr();
  e.zr = plain_operand(u, e.C, e.P);
  e.st = st.data_ptr();
  e.has_t = brc.defined();
  e.br = ptr_or_null(brc);
  if ((stacked || need_a || reductions) && e.B * e.C * e.P > 0) FASTDSTN_RUN(g, e, dense_backward);
  return {gz, a};
}

std::tuple<Tensor, Tensor, Tensor> conv_backward(const Tensor& grad, const Tensor& input, const Tensor& weight,
                                                 at::IntArrayRef stride, at::IntArrayRef padding,
                                                 at::IntArrayRef dilation, int64_t groups, bool need_input,
                                                 bool need_weight) {
  if (!need_input && !need_weight) return {};
  return at::convolution_backward(grad, input, weight, std::nullopt, stride, padding, dilation, false, {0, 0},
                                  groups, {need_input, need_weight, false});
}

}  // namespace

// ================================================================ linear
T3 stn_linear(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
              const OptTensor& br, const Tensor& V) {
  check_dense("fastdstn::stn_linear", x, std::nullopt, "h", h, Wg, bg, Wr, br, V, false, 1);
  const Tensor st = scale_shift(h, V);
  auto [y, u, unused] = linear_products(x, std::nullopt, Wg, Wr);
  const int64_t C = Wg.size(0);
  forward_epilogue(x, 1, plain_operand(y, C, 1), plain_operand(u, C, 1), st, bg, br, y, Tensor(), false);
  return {y, st, u};
}

// Backward of the linear response epilogue s⊙u + t⊙b_r for the (B, C) cotangent g, in one fused pass:
// a = s⊙g (for ∂W_r and ∂x), each only when needed, and the gradients through [s|t] (∂h, ∂V, ∂b_r).
static Tensor linear_response_backward(const Tensor& g, const Tensor& u, const Tensor& st, const Tensor& brc,
                                       bool need_a, const ScaleShiftGrads& through_st, DenseBackward& e) {
  Tensor a = need_a ? at::empty_like(g) : Tensor();
  e.g = g.data_ptr();
  e.zr = plain_operand(u, e.C, 1);
  e.st = st.data_ptr();
  e.has_t = brc.defined();
  e.br = ptr_or_null(brc);
  if (need_a) e.a = plain_operand(a, e.C, 1);
  if ((need_a || through_st.any()) && e.B * e.C > 0) FASTDSTN_RUN(g, e, dense_backward);
  return a;
}

T7 stn_linear_backward(const Tensor& gy, const Tensor& x, const Tensor& h, const Tensor& Wg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V, const Tensor& u, bool has_bg,
                       std::array<bool, 7> mask) {
  // mask: x, h, Wg, bg, Wr, br, V
  const Tensor g = gy.contiguous(), brc = contiguous_or_undefined(br), st = scale_shift(h, V);
  DenseBackward e{x.scalar_type()};
  e.B = g.size(0);
  e.C = g.size(1);
  ScaleShiftGrads through_st(e, h, st, V, mask[1], mask[6], mask[5] && brc.defined());
  const Tensor a = linear_response_backward(g, u, st, brc, mask[0] || mask[4], through_st, e);

  Tensor dx, dWg, dbg, dWr;
  if (mask[0]) dx = dense_mm(a, Wr, dense_mm(g, Wg));
  if (mask[2]) dWg = dense_mm(g.t(), x);
  if (mask[3] && has_bg) dbg = g.sum(0);
  if (mask[4]) dWr = dense_mm(a.t(), x);
  auto [dh, dV, dbr] = through_st.finish(h, V);
  const Tensor bg_like = has_bg ? g.new_empty({g.size(1)}) : Tensor();
  finish_grads<7>({&dx, &dh, &dWg, &dbg, &dWr, &dbr, &dV}, {&x, &h, &Wg, &bg_like, &Wr, &brc, &V}, mask, x);
  return {dx, dh, dWg, dbg, dWr, dbr, dV};
}

T4 stn_linear_dual(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg, const OptTensor& bg,
                   const Tensor& Wr, const OptTensor& br, const Tensor& V) {
  check_dense("fastdstn::stn_linear_dual", x, xt, "eps", eps, Wg, bg, Wr, br, V, false, 1);
  const Tensor st = scale_shift(eps, V);
  auto [y, u, yt] = linear_products(x, xt, Wg, Wr);
  if (!yt.defined()) yt = at::empty_like(y);
  const int64_t C = Wg.size(0);
  forward_epilogue(x, 1, plain_operand(y, C, 1), plain_operand(u, C, 1), st, bg, br, y, yt, present(xt));
  return {y, yt, st, u};
}

T8 stn_linear_dual_backward(const OptTensor& gy, const OptTensor& gyt, const Tensor& x, const OptTensor& xt,
                            const Tensor& eps, const Tensor& Wg, const Tensor& Wr, const OptTensor& br,
                            const Tensor& V, const Tensor& u, bool has_bg, std::array<bool, 8> mask) {
  // mask: x, xt, eps, Wg, bg, Wr, br, V. The Δ-STN response sub-step asks for xt, Wr, br, V only:
  // two weight GEMMs (∂ẋ = ∂ẏ·W_g, ∂W_r = (s⊙∂ẏ)ᵀ·x) plus the small ones.
  const Tensor brc = contiguous_or_undefined(br);
  const Tensor xtc = present(xt) ? *xt : Tensor();
  Tensor dx, dxt, deps, dWg, dbg, dWr, dbr, dV;
  if (present(gyt)) {
    const Tensor g = gyt->contiguous(), st = scale_shift(eps, V);
    DenseBackward e{x.scalar_type()};
    e.B = g.size(0);
    e.C = g.size(1);
    ScaleShiftGrads through_st(e, eps, st, V, mask[2], mask[7], mask[6] && brc.defined());
    const Tensor a = linear_response_backward(g, u, st, brc, mask[0] || mask[5], through_st, e);
    if (mask[0]) dx = dense_mm(a, Wr);
    if (mask[1]) dxt = dense_mm(g, Wg);
    if (mask[3] && xtc.defined()) dWg = dense_mm(g.t(), xtc);
    if (mask[5]) dWr = dense_mm(a.t(), x);
    std::tie(deps, dV, dbr) = through_st.finish(eps, V);
  }
  if (present(gy)) {
    const Tensor& gp = *gy;
    if (mask[0]) dx = dense_mm(gp, Wg, dx);
    if (mask[3]) dWg = dense_mm(gp.t(), x, dWg);
    if (mask[4] && has_bg) dbg = gp.sum(0);
  }
  const Tensor bg_like = has_bg ? x.new_empty({Wg.size(0)}) : Tensor();
  finish_grads<8>({&dx, &dxt, &deps, &dWg, &dbg, &dWr, &dbr, &dV}, {&x, &xtc, &eps, &Wg, &bg_like, &Wr, &brc, &V},
                  mask, x);
  return {dx, dxt, deps, dWg, dbg, dWr, dbr, dV};
}

// ================================================================ conv2d
T3 stn_conv2d(const Tensor& x, const Tensor& h, const Tensor& Wg, const OptTensor& bg, const Tensor& Wr,
              const OptTensor& br, const Tensor& V, at::IntArrayRef stride, at::IntArrayRef padding,
              at::IntArrayRef dilation, int64_t groups) {
  check_dense("fastdstn::stn_conv2d", x, std::nullopt, "h", h, Wg, bg, Wr, br, V, true, groups);
  const Tensor st = scale_shift(h, V);
  auto [y, yt, u] = conv_forward(x, st, Wg, bg, Wr, br, stride, padding, dilation, groups, false, Tensor());
  return {y, st, u};
}

T7 stn_conv2d_backward(const Tensor& gy, const Tensor& x, const Tensor& h, const Tensor& Wg, const Tensor& Wr,
                       const OptTensor& br, const Tensor& V, const Tensor& u,
                       at::IntArrayRef stride, at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups,
                       bool has_bg, std::array<bool, 7> mask) {
  // mask: x, h, Wg, bg, Wr, br, V
  const Tensor g = gy.contiguous(), brc = contiguous_or_undefined(br), st = scale_shift(h, V);
  const int64_t B = g.size(0), C = g.size(1), P = g.size(2) * g.size(3);
  const bool stacked = mask[0] || mask[2];  // ∂x or ∂W_g: one convolution_backward over [∂z_g | ∂z_r]
  const bool need_a = stacked || mask[4];
  DenseBackward e{x.scalar_type()};
  e.B = B;
  e.C = C;
  e.P = P;
  ScaleShiftGrads through_st(e, h, st, V, mask[1], mask[6], mask[5] && brc.defined());
  const auto [gz, a] = conv_response_epilogue(e, g, g, u, st, brc, groups, stacked, need_a, through_st.any());

  Tensor dx, dWg, dbg, dWr;
  if (stacked) {
    const auto r = conv_backward(gz, x, stack_weights(Wg, Wr, groups), stride, padding, dilation, groups, mask[0],
                                 mask[2] || mask[4]);
    dx = std::get<0>(r);
    if (std::get<1>(r).defined()) std::tie(dWg, dWr) = unstack_weights(std::get<1>(r), groups);
  } else if (mask[4]) {
    dWr = std::get<1>(conv_backward(a, x, Wr, stride, padding, dilation, groups, false, true));
  }
  if (mask[3] && has_bg) dbg = g.sum({0, 2, 3});
  auto [dh, dV, dbr] = through_st.finish(h, V);
  const Tensor bg_like = has_bg ? x.new_empty({C}) : Tensor();
  finish_grads<7>({&dx, &dh, &dWg, &dbg, &dWr, &dbr, &dV}, {&x, &h, &Wg, &bg_like, &Wr, &brc, &V}, mask, x);
  return {dx, dh, dWg, dbg, dWr, dbr, dV};
}

T4 stn_conv2d_dual(const Tensor& x, const OptTensor& xt, const Tensor& eps, const Tensor& Wg, const OptTensor& bg,
                   const Tensor& Wr, const OptTensor& br, const Tensor& V, at::IntArrayRef stride,
                   at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups) {
  check_dense("fastdstn::stn_conv2d_dual", x, xt, "eps", eps, Wg, bg, Wr, br, V, true, groups);
  const Tensor st = scale_shift(eps, V);
  if (present(xt) && batch_with_tangent(x, Wg)) {
    auto [y, yt, u] = conv_dual_forward_batched(x, *xt, st, Wg, bg, Wr, br, stride, padding, dilation, groups);
    return {y, yt, st, u};
  }
  const Tensor w = present(xt) ? conv(*xt, Wg, stride, padding, dilation, groups).contiguous() : Tensor();
  auto [y, yt, u] = conv_forward(x, st, Wg, bg, Wr, br, stride, padding, dilation, groups, true, w);
  return {y, yt, st, u};
}

T8 stn_conv2d_dual_backward(const OptTensor& gy, const OptTensor& gyt, const Tensor& x, const OptTensor& xt,
                            const Tensor& eps, const Tensor& Wg, const Tensor& Wr, const OptTensor& br,
                            const Tensor& V, const Tensor& u, at::IntArrayRef stride,
                            at::IntArrayRef padding, at::IntArrayRef dilation, int64_t groups, bool has_bg,
                            std::array<bool, 8> mask) {
  // mask: x, xt, eps, Wg, bg, Wr, br, V
  const Tensor brc = contiguous_or_undefined(br);
  const Tensor xtc = present(xt) ? *xt : Tensor();
  const bool has_g = present(gyt), has_gy = present(gy);
  const int64_t B = u.size(0), C = Wg.size(0), Ho = u.size(2), Wo = u.size(3), P = Ho * Wo;
  const Tensor gyc = has_gy ? gy->contiguous() : Tensor();
  // Operand x meets two cotangents: ∂z_g = ∂y (for ∂x, ∂W_g) and ∂z_r = s⊙∂ẏ (for ∂x, ∂W_r).
  const bool zg_needed = has_gy && (mask[0] || mask[3]);
  const bool zr_needed = has_g && (mask[0] || mask[5]);
  const bool stacked = zg_needed && zr_needed;
  Tensor dx, dxt, deps, dWg, dbg, dWr, dbr, dV, dWg_t;
  Tensor gz, a;
  if (has_g) {
    const Tensor g = gyt->contiguous(), st = scale_shift(eps, V);
    DenseBackward e{x.scalar_type()};
    e.B = B;
    e.C = C;
    e.P = P;
    ScaleShiftGrads through_st(e, eps, st, V, mask[2], mask[7], mask[6] && brc.defined());
    std::tie(gz, a) = conv_response_epilogue(e, g, gyc, u, st, brc, groups, stacked, zr_needed, through_st.any());
    // ẋ's side: ∂ẋ = conv_input_grad(∂ẏ, W_g), ∂W_g += conv_weight_grad(∂ẏ, ẋ).
    const bool wg_from_xt = mask[3] && xtc.defined();
    if (mask[1] || wg_from_xt) {
      const auto r = conv_backward(g, xtc.defined() ? xtc : x, Wg, stride, padding, dilation, groups, mask[1],
                                   wg_from_xt);
      dxt = std::get<0>(r);
      dWg_t = std::get<1>(r);
    }
    std::tie(deps, dV, dbr) = through_st.finish(eps, V);
  }
  if (stacked) {
    const auto r = conv_backward(gz, x, stack_weights(Wg, Wr, groups), stride, padding, dilation, groups, mask[0],
                                 mask[3] || mask[5]);
    dx = std::get<0>(r);
    if (std::get<1>(r).defined()) std::tie(dWg, dWr) = unstack_weights(std::get<1>(r), groups);
  } else if (zg_needed) {
    std::tie(dx, dWg, std::ignore) = conv_backward(gyc, x, Wg, stride, padding, dilation, groups, mask[0], mask[3]);
  } else if (zr_needed) {
    std::tie(dx, dWr, std::ignore) = conv_backward(a, x, Wr, stride, padding, dilation, groups, mask[0], mask[5]);
  }
  if (dWg_t.defined()) dWg = dWg.defined() ? dWg + dWg_t : dWg_t;
  if (mask[4] && has_bg && has_gy) dbg = gyc.sum({0, 2, 3});
  const Tensor bg_like = has_bg ? x.new_empty({C}) : Tensor();
  finish_grads<8>({&dx, &dxt, &deps, &dWg, &dbg, &dWr, &dbr, &dV}, {&x, &xtc, &eps, &Wg, &bg_like, &Wr, &brc, &V},
                  mask, x);
  return {dx, dxt, deps, dWg, dbg, dWr, dbr, dV};
}

// ================================================================ registration
namespace {

void register_kernels(torch::Library& m) {
  m.impl("stn_linear", &stn_linear);
  m.impl("stn_linear_backward", &stn_linear_backward);
  m.impl("stn_linear_dual", &stn_linear_dual);
  m.impl("stn_linear_dual_backward", &stn_linear_dual_backward);
  m.impl("stn_conv2d", &stn_conv2d);
  m.impl("stn_conv2d_backward", &stn_conv2d_backward);
  m.impl("stn_conv2d_dual", &stn_conv2d_dual);
  m.impl("stn_conv2d_dual_backward", &stn_conv2d_dual_backward);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("stn_linear(Tensor x, Tensor h, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V)"
        " -> (Tensor y, Tensor st, Tensor u)");
  m.def("stn_linear_backward(Tensor gy, Tensor x, Tensor h, Tensor Wg, Tensor Wr, Tensor? br, Tensor V,"
        " Tensor u, bool has_bg, bool[7] mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_linear_dual(Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V)"
        " -> (Tensor y, Tensor yt, Tensor st, Tensor u)");
  m.def("stn_linear_dual_backward(Tensor? gy, Tensor? gyt, Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor Wr,"
        " Tensor? br, Tensor V, Tensor u, bool has_bg, bool[8] mask)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_conv2d(Tensor x, Tensor h, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V, int[2] stride,"
        " int[2] padding, int[2] dilation, int groups) -> (Tensor y, Tensor st, Tensor u)");
  m.def("stn_conv2d_backward(Tensor gy, Tensor x, Tensor h, Tensor Wg, Tensor Wr, Tensor? br, Tensor V,"
        " Tensor u, int[2] stride, int[2] padding, int[2] dilation, int groups, bool has_bg, bool[7] mask)"
        " -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("stn_conv2d_dual(Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor? bg, Tensor Wr, Tensor? br, Tensor V,"
        " int[2] stride, int[2] padding, int[2] dilation, int groups) -> (Tensor y, Tensor yt, Tensor st, Tensor u)");
  m.def("stn_conv2d_dual_backward(Tensor? gy, Tensor? gyt, Tensor x, Tensor? xt, Tensor eps, Tensor Wg, Tensor Wr,"
        " Tensor? br, Tensor V, Tensor u, int[2] stride, int[2] padding, int[2] dilation, int groups,"
        " bool has_bg, bool[8] mask) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  // The weight products of the linear ops on their own (CPU), for tests and benchmarks of the kernel.
  m.def("_dense_mm(Tensor a, Tensor b) -> Tensor");
  m.def("_linear_products(Tensor x, Tensor? xt, Tensor Wg, Tensor Wr) -> (Tensor y, Tensor u, Tensor yt)");
}

FASTDSTN_REGISTER_KERNELS(register_kernels)

TORCH_LIBRARY_IMPL(fastdstn, CPU, m) {
  m.impl("_dense_mm", [](const at::Tensor& a, const at::Tensor& b) { return dense_mm(a, b); });
  m.impl("_linear_products", [](const at::Tensor& x, const std::optional<at::Tensor>& xt, const at::Tensor& Wg,
                                 const at::Tensor& Wr) {
    auto [y, u, yt] = linear_products(x, xt, Wg, Wr);
    return std::make_tuple(y, u, yt.defined() ? yt : x.new_empty({0}));  // no ẋ: an empty ẋ·W_gᵀ
  });
}

}  // namespace fastdstn
