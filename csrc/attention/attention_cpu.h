// The keep mask's CPU loop, drawing the mask of attention_math.h. Included once per instruction set by
// attention_ops.cpp (common/isa_copies.h), inside a namespace of that set: no include guard, no includes.
// at::parallel_for (OpenMP) over (head, query row) pairs, `#pragma omp simd` along a row's keys.

namespace m = fastdstn::math;

// The type that holds Philox's 32-bit words in this copy's vectorized rounds. g++ 12 vectorizes uint32_t words
// with vpmuludq, widening the words to 64-bit lanes and narrowing them back with cross-lane shuffles every
// round; uint64_t words stay in 64-bit lanes, multiplied by AVX-512DQ's vpmullq, while without AVX-512 they
// are multiplied by the constants with shifts and adds. ns per mask element, 1 thread, uint32_t / uint64_t
// words: AVX-512 2.9 / 1.6, AVX2 5.3 / 5.8, baseline 5.5 / 11.3 (a stand-alone copy of this loop at 256 rows ×
// 4096 keys, on this project's AMD EPYC build machine); in the op at 64 heads × 65 rows × 65 keys the AVX-512
// copy went from 0.82 to 0.42 ms (`python benchmarks/bench_attention.py --keep-mask --threads 1`). On an Intel Xeon,
// where vpmullq is 3 µops, the AVX-512 copy still leads: 0.70 ms against 1.56 (AVX2) and 1.70 (baseline)
// (`python benchmarks/bench_cpu_env.py isa`).
using PhiloxWord = std::conditional_t<kLoopIsa == Isa::avx512, uint64_t, uint32_t>;

// One query row of one head: the draws of keys 0 … keys − 1 differ only in the counter's first word, so the
// loop vectorizes over keys.
template <class S>
void keep_mask_row(uint64_t seed, uint32_t row, uint32_t head, float rate, S keep_scale, int64_t keys, S* out) {
#pragma omp simd
  for (int64_t j = 0; j < keys; ++j) {
    out[j] = m::attention_keep<PhiloxWord>(seed, static_cast<uint32_t>(j), row, head, rate, keep_scale);
  }
}

template <class S>
void keep_mask_loop(const KeepMask& e) {
  S* out = static_cast<S*>(e.out);
  at::parallel_for(0, e.heads * e.rows, grain_rows(e.keys), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t n = r / e.rows, i = e.row_start + r % e.rows;
      // The draw is compared with the float32 rate; the kept weight's scale is computed in the mask's dtype
      // from the rate rounded to it, as the reference does.
      const S p = static_cast<S>(e.rate[n]);
      const S keep_scale = S(1) / (S(1) - p);
      keep_mask_row<S>(e.seed, static_cast<uint32_t>(i), static_cast<uint32_t>(n), static_cast<float>(e.rate[n]),
                       keep_scale, e.keys, out + r * e.keys);
    }
  });
}

// ---------------------------------------------------------------- entry point of this instruction set
inline void keep_mask(const KeepMask& e) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, e.dtype, "fastdstn_attention_keep_mask_cpu",
                                  [&] { keep_mask_loop<scalar_t>(e); });
}
