// The penalty family's C++ declarations: the two weight-sized passes of the tuned L2 penalty
// ‖W_g + diag(s)·W_r‖² (docs/METHOD.md §6) and the descriptions they hand to the CPU loops (penalty_cpu.h).
// CPU only: on CUDA the reference's ATen kernels run these passes (fastdstn/ops/penalty/cpp.py).
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../common/ops.h"

namespace fastdstn {

// Rows k of two contiguous (rows, cols) matrices g and r, read once: out (3, rows) receives ‖g_k‖², ⟨g_k, r_k⟩
// and ‖r_k‖², accumulated in float64.
struct RowSums {
  at::ScalarType dtype;
  int64_t rows = 0, cols = 0;
  const void *g = nullptr, *r = nullptr;
  void* out = nullptr;
};

// out_k = a_k·g_k + b_k·r_k for the rows k of contiguous (rows, cols) g, r and out; a and b (rows) in float64.
struct RowCombination {
  at::ScalarType dtype;
  int64_t rows = 0, cols = 0;
  const double *a = nullptr, *b = nullptr;
  const void *g = nullptr, *r = nullptr;
  void* out = nullptr;
};

// The CPU loops (penalty_cpu.h, through penalty_ops.cpp).
void row_sums_cpu(const RowSums& e);
void row_combination_cpu(const RowCombination& e);

// The op bodies (penalty_ops.cpp); their schemas at the end of penalty_ops.cpp.
Tensor penalty_row_sums(const Tensor& g, const Tensor& r);
Tensor penalty_row_combination(const Tensor& a, const Tensor& g, const Tensor& b, const Tensor& r);

}  // namespace fastdstn
