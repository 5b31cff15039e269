// Pointwise ops of the dual pass: lstm_cell_dual (+ backward) and dropout_dual. Device-generic
// bodies: checks and allocation here, the loop of the tensors' device in epilogue_cpu.cpp or
// cuda/stn_kernels.cu (both apply stn_math.h).
#include "stn_ops.h"

#include <c10/util/Exception.h>

namespace fastdstn {
namespace {

template <class E>
void run_on(const Tensor& like, const E& e, void (*cpu)(const E&)
#ifdef FASTDSTN_WITH_CUDA
            ,
            void (*cuda)(const E&)
#endif
) {
  if (like.is_cuda()) {
#ifdef FASTDSTN_WITH_CUDA
    cuda(e);
#else
    TORCH_CHECK(false, "fastdstn: this build has no CUDA kernels: rebuild with FASTDSTN_CUDA=1");
#endif
  } else {
    cpu(e);
  }
}

#ifdef FASTDSTN_WITH_CUDA
#define FD_RUN(like, e, name) run_on(like, e, name##_cpu, name##_cuda)
#else
#define FD_RUN(like, e, name) run_on(like, e, name##_cpu)
#endif

void check_floating(const char* op, const char* name, const Tensor& t) {
  const auto dt = t.scalar_type();
  const bool ok = dt == at::kFloat || dt == at::kDouble ||
                  (t.is_cuda() && (dt == at::kHalf || dt == at::kBFloat16));
  TORCH_CHECK(ok, op, ": ", name, ": expected float32 or float64 (or float16/bfloat16 on CUDA), received ", dt);
}

void check_like(const char* op, const char* name, const OptTensor& t, const Tensor& ref, const char* ref_name) {
  if (!t || !t->defined()) return;
  TORCH_CHECK(t->sizes() == ref.sizes(), op, ": ", name, ": expected shape ", ref.sizes(), " (the shape of ",
              ref_name, "), received ", t->sizes());
  TORCH_CHECK(t->scalar_type() == ref.scalar_type(), op, ": ", name, ": expected dtype ", ref.scalar_type(),
              " (the dtype of ", ref_name, "), received ", t->scalar_type());
  TORCH_CHECK(t->device() == ref.device(), op, ": ", name, ": expected device ", ref.device(), " (the device of ",
              ref_name, "), received ", t->device());
}

bool present(const OptTensor& t) { return t.has_value() && t->defined(); }
Tensor contig(const OptTensor& t) { return present(t) ? t->contiguous() : Tensor(); }
const void* cptr(const Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }
void* mptr(Tensor& t) { return t.defined() ? t.data_ptr() : nullptr; }

void check_lstm(const char* op, const Tensor& gates, const OptTensor& gates_t, const Tensor& c,
                const OptTensor& c_t) {
  TORCH_CHECK(c.dim() == 2, op, ": c: expected a 2-d tensor (N, hidden), received shape ", c.sizes());
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == c.size(0) && gates.size(1) == 4 * c.size(1), op,
              ": gates: expected shape [", c.size(0), ", ", 4 * c.size(1),
              "] (4 gates i, f, g, o per hidden unit of c), received ", gates.sizes());
  check_floating(op, "gates", gates);
  TORCH_CHECK(c.scalar_type() == gates.scalar_type() && c.device() == gates.device(), op,
              ": c: expected the dtype and device of gates (", gates.scalar_type(), ", ", gates.device(),
              "), received ", c.scalar_type(), ", ", c.device());
  check_like(op, "gates_t", gates_t, gates, "gates");
  check_like(op, "c_t", c_t, c, "c");
}

}  // namespace

// ================================================================ LSTM cell
T4 lstm_cell_dual(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t) {
  check_lstm("fastdstn::lstm_cell_dual", gates, gates_t, c, c_t);
  const Tensor G = gates.contiguous(), C0 = c.contiguous(), Gt = contig(gates_t), Ct = contig(c_t);
  const bool dual = Gt.defined() || Ct.defined();
  Tensor h = at::empty_like(C0), c_new = at::empty_like(C0);
  Tensor ht = dual ? at::empty_like(C0) : at::empty({0}, C0.options());
  Tensor ct = dual ? at::empty_like(C0) : at::empty({0}, C0.options());
  LstmForward e{G.scalar_type()};
  e.N = C0.size(0);
  e.H = C0.size(1);
  e.gates = G.data_ptr();
  e.gates_t = cptr(Gt);
  e.c = C0.data_ptr();
  e.c_t = cptr(Ct);
  e.h = h.data_ptr();
  e.c_new = c_new.data_ptr();
  e.ht = dual ? ht.data_ptr() : nullptr;
  e.ct_new = dual ? ct.data_ptr() : nullptr;
  if (e.N * e.H > 0) FD_RUN(G, e, lstm_forward);
  return {h, ht, c_new, ct};
}

T4 lstm_cell_dual_backward(const OptTensor& gh, const OptTensor& ght, const OptTensor& gc, const OptTensor& gct,
                           const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t,
                           std::array<bool, 4> mask) {
  // mask: gates, gates_t, c, c_t. Absent cotangents and absent tangents count as zero.
  const Tensor G = gates.contiguous(), C0 = c.contiguous(), Gt = contig(gates_t), Ct = contig(c_t);
  const Tensor Gh = contig(gh), Ght = contig(ght), Gc = contig(gc), Gct = contig(gct);
  const bool want_gt = mask[1] && Gt.defined(), want_ct = mask[3] && Ct.defined();
  Tensor dG = mask[0] ? at::empty_like(G) : at::empty({0}, G.options());
  Tensor dGt = want_gt ? at::empty_like(G) : at::empty({0}, G.options());
  Tensor dC = mask[2] ? at::empty_like(C0) : at::empty({0}, G.options());
  Tensor dCt = want_ct ? at::empty_like(C0) : at::empty({0}, G.options());
  LstmBackward e{G.scalar_type()};
  e.N = C0.size(0);
  e.H = C0.size(1);
  e.gates = G.data_ptr();
  e.gates_t = cptr(Gt);
  e.c = C0.data_ptr();
  e.c_t = cptr(Ct);
  e.gh = cptr(Gh);
  e.ght = cptr(Ght);
  e.gc = cptr(Gc);
  e.gct = cptr(Gct);
  e.dgates = mask[0] ? dG.data_ptr() : nullptr;
  e.dgates_t = want_gt ? dGt.data_ptr() : nullptr;
  e.dc = mask[2] ? dC.data_ptr() : nullptr;
  e.dc_t = want_ct ? dCt.data_ptr() : nullptr;
  if (e.N * e.H > 0 && (mask[0] || want_gt || mask[2] || want_ct)) FD_RUN(G, e, lstm_backward);
  return {dG, dGt, dC, dCt};
}

// ================================================================ dropout
std::tuple<Tensor, Tensor> dropout_dual(const Tensor& x, const OptTensor& xt, const Tensor& rate, int64_t seed,
                                        int64_t batch_dim, at::IntArrayRef shared_dims) {
  const char* op = "fastdstn::dropout_dual";
  check_floating(op, "x", x);
  const int64_t nd = x.dim();
  TORCH_CHECK(nd >= 1 && nd <= kMaxDims, op, ": x: expected 1 to ", kMaxDims, " dimensions, received shape ",
              x.sizes());
  TORCH_CHECK(batch_dim >= -nd && batch_dim < nd, op, ": batch_dim: expected a dimension of x (shape ", x.sizes(),
              "), received ", batch_dim);
  const int bd = static_cast<int>((batch_dim + nd) % nd);
  check_like(op, "xt", xt, x, "x");
  TORCH_CHECK(rate.dim() == 1 && rate.size(0) == x.size(bd), op, ": rate: expected shape [", x.size(bd),
              "] (one drop probability per example), received ", rate.sizes());
  TORCH_CHECK(rate.is_floating_point(), op, ": rate: expected a floating-point tensor, received ",
              rate.scalar_type());
  TORCH_CHECK(rate.device() == x.device(), op, ": rate: expected device ", x.device(),
              " (the device of x), received ", rate.device());
  const Tensor r64 = rate.to(at::kDouble).contiguous();
  if (r64.numel() > 0) {
    TORCH_CHECK(at::isfinite(r64).all().item<bool>(), op, ": rate: expected finite drop probabilities, received ",
                "non-finite values");
    const auto [lo, hi] = at::aminmax(r64);
    TORCH_CHECK(lo.item<double>() >= 0.0 && hi.item<double>() < 1.0, op,
                ": rate: expected drop probabilities in [0, 1), received values in [", lo.item<double>(), ", ",
                hi.item<double>(), "]");
  }
  bool shared[kMaxDims] = {false};
  for (int64_t d : shared_dims) {
    TORCH_CHECK(d >= -nd && d < nd, op, ": shared_dims: ", d, " is not a dimension of x (shape ", x.sizes(), ")");
    const int64_t k = (d + nd) % nd;
    TORCH_CHECK(k != bd, op, ": shared_dims: must not contain the batch dimension ", bd);
    shared[k] = true;
  }
  const Tensor X = x.contiguous(), Xt = contig(xt);
  Tensor y = at::empty_like(X);
  Tensor yt = Xt.defined() ? at::empty_like(X) : at::empty({0}, X.options());
  Dropout e{X.scalar_type()};
  e.ndim = static_cast<int>(nd);
  e.numel = X.numel();
  int64_t stride = 1;
  for (int64_t d = nd - 1; d >= 0; --d) {
    e.sizes[d] = X.size(d);
    e.mask_stride[d] = shared[d] ? 0 : stride;
    if (!shared[d]) stride *= X.size(d);
  }
  e.batch_dim = bd;
  e.stream = math::dropout_stream(seed);
  e.rate = r64.data_ptr<double>();
  e.x = X.data_ptr();
  e.xt = cptr(Xt);
  e.y = y.data_ptr();
  e.yt = Xt.defined() ? yt.data_ptr() : nullptr;
  if (e.numel > 0) FD_RUN(X, e, dropout);
  return {y, yt};
}

}  // namespace fastdstn
