// The tuned L2 penalty's weight-sized passes (docs/METHOD.md §6): the schemas of penalty_row_sums and
// penalty_row_combination, their op bodies (checks and allocation here, the CPU loops in penalty_cpu.h) and their
// registration for the CPU key. The penalty's autograd is fastdstn/nn/groups.py's, in Python.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>

#include "../common/isa.h"
#include "../common/ops.h"
#include "penalty_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../penalty/penalty_cpu.h"
#include "../common/isa_copies.h"

void row_sums_cpu(const RowSums& e) { FASTDSTN_CPU_CALL(row_sums, e) }
void row_combination_cpu(const RowCombination& e) { FASTDSTN_CPU_CALL(row_combination, e) }

namespace {

// g: a weight of at least one dim (its rows along dim 0); r: the same shape, dtype and device.
void check_weights(const char* op, const Tensor& g, const Tensor& r) {
  check_floating(op, "g", g);
  TORCH_CHECK(g.dim() >= 1, op, ": g: expected a weight with its rows (output units) along dim 0, received a ",
              "0-dim tensor");
  TORCH_CHECK(r.sizes() == g.sizes(), op, ": r: expected shape ", g.sizes(), " (the shape of g), received ",
              r.sizes());
  check_same_kind(op, "r", r, g, "g");
}

// A per-row coefficient: shape (rows), floating, on g's device; as a contiguous float64 copy.
Tensor row_coefficients(const char* op, const char* name, const Tensor& c, const Tensor& g) {
  TORCH_CHECK(c.dim() == 1 && c.size(0) == g.size(0), op, ": ", name, ": expected shape [", g.size(0),
              "] (one coefficient per row of g), received ", c.sizes());
  TORCH_CHECK(c.is_floating_point(), op, ": ", name, ": expected a floating-point tensor, received ",
              c.scalar_type());
  TORCH_CHECK(c.device() == g.device(), op, ": ", name, ": expected device ", g.device(),
              " (the device of g), received ", c.device());
  return c.to(at::kDouble).contiguous();
}

}  // namespace

Tensor penalty_row_sums(const Tensor& g, const Tensor& r) {
  check_weights("fastdstn::penalty_row_sums", g, r);
  const Tensor G = g.contiguous(), R = r.contiguous();
  Tensor out = at::empty({3, G.size(0)}, G.options());
  RowSums e{G.scalar_type()};
  e.rows = G.size(0);
  e.cols = e.rows > 0 ? G.numel() / e.rows : 0;
  e.g = G.data_ptr();
  e.r = R.data_ptr();
  e.out = out.data_ptr();
  if (e.rows > 0) row_sums_cpu(e);
  return out;
}

Tensor penalty_row_combination(const Tensor& a, const Tensor& g, const Tensor& b, const Tensor& r) {
  const char* op = "fastdstn::penalty_row_combination";
  check_weights(op, g, r);
  const Tensor A = row_coefficients(op, "a", a, g), B = row_coefficients(op, "b", b, g);
  const Tensor G = g.contiguous(), R = r.contiguous();
  Tensor out = at::empty_like(G);
  RowCombination e{G.scalar_type()};
  e.rows = G.size(0);
  e.cols = e.rows > 0 ? G.numel() / e.rows : 0;
  e.a = A.data_ptr<double>();
  e.b = B.data_ptr<double>();
  e.g = G.data_ptr();
  e.r = R.data_ptr();
  e.out = out.data_ptr();
  if (out.numel() > 0) row_combination_cpu(e);
  return out;
}

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("penalty_row_sums(Tensor g, Tensor r) -> Tensor");
  m.def("penalty_row_combination(Tensor a, Tensor g, Tensor b, Tensor r) -> Tensor");
}

// CPU only (penalty_ops.h).
TORCH_LIBRARY_IMPL(fastdstn, CPU, m) {
  m.impl("penalty_row_sums", &penalty_row_sums);
  m.impl("penalty_row_combination", &penalty_row_combination);
}

}  // namespace fastdstn
