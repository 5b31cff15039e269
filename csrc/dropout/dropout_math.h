// Per-example dropout's mask (docs/METHOD.md §6), written once for the CPU loop (dropout_cpu.h) and the CUDA
// kernel (dropout_cuda.cu): a counter-based generator, so a mask element is a pure function of (seed, index).
#pragma once

#include "../common/math.h"

namespace fastdstn {
namespace math {

// splitmix64's output function at position `index` of the stream started by `seed`: the CPU and the
// CUDA code draw identical masks, and the backward regenerates the forward's mask from the seed.

FD_HD uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

// Seed scrambled once on the host, so that nearby seeds give unrelated streams.
FD_HD uint64_t dropout_stream(int64_t seed) {
  return mix64(static_cast<uint64_t>(seed) + 0x632BE59BD9B4E019ull);
}

// Uniform in [0, 1) with 24 random bits (exactly representable in float and double).
FD_HD float uniform01(uint64_t stream, uint64_t index) {
  const uint64_t r = mix64(stream + (index + 1) * 0x9E3779B97F4A7C15ull);
  // through uint32 (the value is below 2^24): a 32-bit integer conversion vectorizes on AVX2
  return static_cast<float>(static_cast<uint32_t>(r >> 40)) * (1.0f / 16777216.0f);
}

// Scaled keep-mask value of one draw: 1/(1 − p) with probability 1 − p, else 0.
template <class T>
FD_HD T dropout_scale(float u, double p, T keep_scale) {
  return u >= p ? keep_scale : T(0);
}

}  // namespace math
}  // namespace fastdstn
