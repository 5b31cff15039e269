// Attention dropout's keep mask (docs/attention.md §5): Philox4x32-10, the counter-based generator that
// Triton's tl.philox implements, so the CPU loop (attention_cpu.h), the PyTorch reference
// (fastdstn/ops/attention/reference.py, the oracle) and the Triton kernel draw the same numbers. Written once, as
// FD_HD functions of one element.
#pragma once

#include "../common/math.h"

namespace fastdstn {
namespace math {

// Philox4x32-10's round multipliers and key increments (Salmon et al. 2011, as triton.language.random).
constexpr uint32_t kPhiloxRoundA = 0xD2511F53u, kPhiloxRoundB = 0xCD9E8D57u;
constexpr uint32_t kPhiloxKeyA = 0x9E3779B9u, kPhiloxKeyB = 0xBB67AE85u;
constexpr int kPhiloxRounds = 10;

// The first output word of Philox4x32-10 for the counter (c0, c1, c2, c3) under the 64-bit key `key` (low word
// first). Word, uint32_t or uint64_t, is the type that holds each 32-bit word during the rounds: the result is
// the same, but a loop over c0 vectorizes differently (attention_cpu.h picks per instruction set). Each round's
// products are 32×32→64-bit multiplies of zero-extended words.
template <class Word>
FD_HD uint32_t philox_first_word(uint64_t key, uint32_t c0_in, uint32_t c1_in, uint32_t c2_in, uint32_t c3_in) {
  constexpr uint64_t kLow = 0xFFFFFFFFull;
  Word c0 = c0_in, c1 = c1_in, c2 = c2_in, c3 = c3_in;
  Word k0 = static_cast<Word>(key & kLow), k1 = static_cast<Word>(key >> 32);
#pragma GCC unroll 10
  for (int round = 0; round < kPhiloxRounds; ++round) {
    const uint64_t b = static_cast<uint64_t>(c2) * kPhiloxRoundB;
    const uint64_t a = static_cast<uint64_t>(c0) * kPhiloxRoundA;
    c0 = static_cast<Word>((b >> 32) ^ c1 ^ k0);
    c1 = static_cast<Word>(b & kLow);
    c2 = static_cast<Word>((a >> 32) ^ c3 ^ k1);
    c3 = static_cast<Word>(a & kLow);
    k0 = static_cast<Word>((k0 + kPhiloxKeyA) & kLow);
    k1 = static_cast<Word>((k1 + kPhiloxKeyB) & kLow);
  }
  return static_cast<uint32_t>(c0);
}

// A Philox word as a uniform float in [0, 1), as tl.uint_to_uniform_float maps it: read as int32, the
// negative half folded onto [0, 2^31) (x ↦ ~x), then scaled by the largest float32 s with (2^31 − 1)·s < 1.
// The scale is the float32 rounding of the double 4.6566127342e-10, as the reference's float32 product
// rounds it (a float literal rounds the decimal once and could differ in the last bit).
FD_HD float philox_uniform(uint32_t word) {
  const uint32_t folded = word >= 0x80000000u ? ~word : word;
  return static_cast<float>(static_cast<int32_t>(folded)) * static_cast<float>(4.6566127342e-10);
}

// Attention weight (head n, query row i, key j) is kept when its draw u(seed; j, i, n, 0) reaches the head's
// float32 drop rate p; a kept weight is scaled by keep_scale = 1/(1 − p), computed by the caller in its dtype.
template <class Word, class T>
FD_HD T attention_keep(uint64_t seed, uint32_t key, uint32_t row, uint32_t head, float rate, T keep_scale) {
  return philox_uniform(philox_first_word<Word>(seed, key, row, head, 0u)) >= rate ? keep_scale : T(0);
}

}  // namespace math
}  // namespace fastdstn
