// The LSTM cell with tangents (docs/METHOD.md §5): lstm_cell_dual and its backward. Schema, device-generic op
// bodies (checks and allocation here, the loop of the tensors' device in lstm_cell_cpu.h or lstm_cell_cuda.cu,
// both applying lstm_cell_math.h), their registration for the CPU and CUDA keys, and the CPU loops.
// A `bool[4] mask` is autograd's needs_input_grad; gradients not asked for come back as empty tensors, as do
// the tangents ḣ, ċ when neither gates_t nor c_t is given.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/cpu/vec/vec.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/isa.h"
#include "../common/ops.h"
#include "lstm_cell_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../lstm_cell/lstm_cell_cpu.h"
#include "../common/isa_copies.h"

void lstm_forward_cpu(const LstmForward& e) { FASTDSTN_CPU_CALL(lstm_forward, e) }
void lstm_backward_cpu(const LstmBackward& e) { FASTDSTN_CPU_CALL(lstm_backward, e) }

namespace {

void check_lstm(const char* op, const Tensor& gates, const OptTensor& gates_t, const Tensor& c,
                const OptTensor& c_t) {
  TORCH_CHECK(c.dim() == 2, op, ": c: expected a 2-d tensor (N, hidden), received shape ", c.sizes());
  TORCH_CHECK(gates.dim() == 2 && gates.size(0) == c.size(0) && gates.size(1) == 4 * c.size(1), op,
              ": gates: expected shape [", c.size(0), ", ", 4 * c.size(1),
              "] (4 gates i, f, g, o per hidden unit of c), received ", gates.sizes());
  check_floating(op, "gates", gates);
  check_same_kind(op, "c", c, gates, "gates");
  check_like(op, "gates_t", gates_t, gates, "gates");
  check_like(op, "c_t", c_t, c, "c");
}

// The step's inputs made contiguous (an absent tangent stays undefined), and the fields of a step description
// (LstmForward or LstmBackward) that they fill.
struct CellInputs {
  Tensor G, Gt, C0, Ct;

  CellInputs(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t)
      : G(gates.contiguous()), Gt(contiguous_or_undefined(gates_t)), C0(c.contiguous()),
        Ct(contiguous_or_undefined(c_t)) {}

  template <class E>
  E describe() const {
    E e{G.scalar_type()};
    e.N = C0.size(0);
    e.H = C0.size(1);
    e.gates = G.data_ptr();
    e.gates_t = ptr_or_null(Gt);
    e.c = C0.data_ptr();
    e.c_t = ptr_or_null(Ct);
    return e;
  }
};

void register_kernels(torch::Library& m) {
  m.impl("lstm_cell_dual", &lstm_cell_dual);
  m.impl("lstm_cell_dual_backward", &lstm_cell_dual_backward);
}

}  // namespace

T4 lstm_cell_dual(const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t) {
  check_lstm("fastdstn::lstm_cell_dual", gates, gates_t, c, c_t);
  const CellInputs in(gates, gates_t, c, c_t);
  const Tensor& C0 = in.C0;
  const bool dual = in.Gt.defined() || in.Ct.defined();
  Tensor h = at::empty_like(C0), c_new = at::empty_like(C0);
  Tensor ht = dual ? at::empty_like(C0) : at::empty({0}, C0.options());
  Tensor ct = dual ? at::empty_like(C0) : at::empty({0}, C0.options());
  LstmForward e = in.describe<LstmForward>();
  e.h = h.data_ptr();
  e.c_new = c_new.data_ptr();
  e.ht = dual ? ht.data_ptr() : nullptr;
  e.ct_new = dual ? ct.data_ptr() : nullptr;
  if (e.N * e.H > 0) FASTDSTN_RUN(in.G, e, lstm_forward);
  return {h, ht, c_new, ct};
}

T4 lstm_cell_dual_backward(const OptTensor& gh, const OptTensor& ght, const OptTensor& gc, const OptTensor& gct,
                           const Tensor& gates, const OptTensor& gates_t, const Tensor& c, const OptTensor& c_t,
                           std::array<bool, 4> mask) {
  // mask: gates, gates_t, c, c_t. Absent cotangents and absent tangents count as zero.
  const CellInputs in(gates, gates_t, c, c_t);
  const Tensor &G = in.G, &C0 = in.C0;
  const Tensor Gh = contiguous_or_undefined(gh), Ght = contiguous_or_undefined(ght);
  const Tensor Gc = contiguous_or_undefined(gc), Gct = contiguous_or_undefined(gct);
  const bool want_gt = mask[1] && in.Gt.defined(), want_ct = mask[3] && in.Ct.defined();
  Tensor dG = mask[0] ? at::empty_like(G) : at::empty({0}, G.options());
  Tensor dGt = want_gt ? at::empty_like(G) : at::empty({0}, G.options());
  Tensor dC = mask[2] ? at::empty_like(C0) : at::empty({0}, G.options());
  Tensor dCt = want_ct ? at::empty_like(C0) : at::empty({0}, G.options());
  LstmBackward e = in.describe<LstmBackward>();
  e.gh = ptr_or_null(Gh);
  e.ght = ptr_or_null(Ght);
  e.gc = ptr_or_null(Gc);
  e.gct = ptr_or_null(Gct);
  e.dgates = mask[0] ? dG.data_ptr() : nullptr;
  e.dgates_t = want_gt ? dGt.data_ptr() : nullptr;
  e.dc = mask[2] ? dC.data_ptr() : nullptr;
  e.dc_t = want_ct ? dCt.data_ptr() : nullptr;
  if (e.N * e.H > 0 && (mask[0] || want_gt || mask[2] || want_ct)) FASTDSTN_RUN(G, e, lstm_backward);
  return {dG, dGt, dC, dCt};
}

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("lstm_cell_dual(Tensor gates, Tensor? gates_t, Tensor c, Tensor? c_t)"
        " -> (Tensor h, Tensor ht, Tensor c_new, Tensor ct)");
  m.def("lstm_cell_dual_backward(Tensor? gh, Tensor? ght, Tensor? gc, Tensor? gct, Tensor gates, Tensor? gates_t,"
        " Tensor c, Tensor? c_t, bool[4] mask) -> (Tensor, Tensor, Tensor, Tensor)");
}

FASTDSTN_REGISTER_KERNELS(register_kernels)

}  // namespace fastdstn
