// Attention dropout's keep mask (docs/attention.md §5): the schema of attention_keep_mask, its op body (checks
// and allocation here, the CPU loop in attention_cpu.h drawing the mask of attention_math.h), its registration
// for the CPU key, and the CPU loop. The attention itself is the reference's blockwise algorithm
// (fastdstn/ops/attention/cpp.py hands it this mask).
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <type_traits>

#include "../common/isa.h"
#include "../common/ops.h"
#include "attention_ops.h"

namespace fastdstn {

#define FASTDSTN_CPU_LOOPS "../attention/attention_cpu.h"
#include "../common/isa_copies.h"

void keep_mask_cpu(const KeepMask& e) { FASTDSTN_CPU_CALL(keep_mask, e) }

Tensor attention_keep_mask(int64_t seed, const Tensor& head_rate, int64_t row_start, int64_t rows, int64_t keys,
                           at::ScalarType dtype) {
  const char* op = "fastdstn::attention_keep_mask";
  // Philox counter words are 32-bit: key j, query row i and head n each index below 2^32.
  constexpr int64_t kCounterLimit = int64_t(1) << 32;
  TORCH_CHECK(head_rate.dim() == 1, op, ": head_rate: expected shape [heads] (one drop probability per flattened "
              "head), received ", head_rate.sizes());
  TORCH_CHECK(head_rate.is_floating_point(), op, ": head_rate: expected a floating-point tensor, received ",
              head_rate.scalar_type());
  TORCH_CHECK(head_rate.size(0) <= kCounterLimit, op, ": head_rate: expected at most 2^32 heads, received ",
              head_rate.size(0));
  TORCH_CHECK(row_start >= 0 && rows >= 0 && row_start + rows <= kCounterLimit, op,
              ": row_start, rows: expected 0 <= row_start and 0 <= rows with row_start + rows <= 2^32, received "
              "row_start ", row_start, ", rows ", rows);
  TORCH_CHECK(keys >= 0 && keys <= kCounterLimit, op, ": keys: expected 0 <= keys <= 2^32, received ", keys);
  TORCH_CHECK(at::isFloatingType(dtype), op, ": dtype: expected a floating dtype, received ", dtype);
  const Tensor r64 = head_rate.to(at::kDouble).contiguous();
  Tensor out = at::empty({head_rate.size(0), rows, keys}, head_rate.options().dtype(dtype));
  KeepMask e{dtype};
  e.seed = static_cast<uint64_t>(seed);
  e.heads = head_rate.size(0);
  e.row_start = row_start;
  e.rows = rows;
  e.keys = keys;
  e.rate = r64.data_ptr<double>();
  e.out = out.data_ptr();
  if (out.numel() > 0) keep_mask_cpu(e);
  return out;
}

TORCH_LIBRARY_FRAGMENT(fastdstn, m) {
  m.def("attention_keep_mask(int seed, Tensor head_rate, int row_start, int rows, int keys, ScalarType dtype)"
        " -> Tensor");
}

// CPU only: on CUDA the Triton kernel draws the mask inside the attention (attention_ops.h).
TORCH_LIBRARY_IMPL(fastdstn, CPU, m) { m.impl("attention_keep_mask", &attention_keep_mask); }

}  // namespace fastdstn
