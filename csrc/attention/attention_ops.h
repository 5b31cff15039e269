// The attention family's C++ declarations: the keep-mask op and the description of the block it hands to the
// CPU loop (attention_cpu.h). CPU only: on CUDA the Triton attention kernel draws its own mask, and the
// Python side (fastdstn/ops/attention/cpp.py) draws CUDA masks with the reference's PyTorch Philox.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>

#include "../common/ops.h"
#include "attention_math.h"

namespace fastdstn {

// The scaled keep mask of query rows row_start … row_start + rows − 1 and keys 0 … keys − 1 of `heads`
// flattened heads, written to out (heads, rows, keys), contiguous.
struct KeepMask {
  at::ScalarType dtype;
  uint64_t seed = 0;
  int64_t heads = 0, row_start = 0, rows = 0, keys = 0;
  const double* rate = nullptr;  // (heads) drop probabilities, float64 (an exact copy of any float dtype)
  void* out = nullptr;
};

// The CPU loop (attention_cpu.h, through attention_ops.cpp).
void keep_mask_cpu(const KeepMask& e);

// The op body (attention_ops.cpp); its schema at the end of attention_ops.cpp.
Tensor attention_keep_mask(int64_t seed, const Tensor& head_rate, int64_t row_start, int64_t rows, int64_t keys,
                           at::ScalarType dtype);

}  // namespace fastdstn
