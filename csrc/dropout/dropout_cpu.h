// Per-example dropout's CPU loop, applying the mask of dropout_math.h. Included once per instruction set by
// dropout_ops.cpp (common/isa_copies.h), inside a namespace of that set: no include guard, no includes.
// at::parallel_for (OpenMP) over rows of the last dimension, `#pragma omp simd` along a row.

namespace m = fastdstn::math;

// One row of the last dimension, whose mask indices are base + j·ms_last. kRatePerColumn: the last
// dimension is the batch dimension, so the rate changes along the row.
template <class S, bool kRatePerColumn>
void dropout_row(uint64_t stream, const double* rate, double p_row, int64_t base, int64_t ms_last, int64_t L,
                 const S* x, const S* xt, S* y, S* yt) {
  const S keep_row = S(1) / (S(1) - S(p_row));
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) {
    const double p = kRatePerColumn ? rate[j] : p_row;
    const S keep = kRatePerColumn ? S(1) / (S(1) - S(p)) : keep_row;
    const S mask = m::dropout_scale(m::uniform01(stream, static_cast<uint64_t>(base + j * ms_last)), p, keep);
    y[j] = x[j] * mask;
    if (yt) yt[j] = xt[j] * mask;
  }
}

// A run of L elements that share one mask value (trailing shared dims, e.g. the H·W of a channel dropout): one
// draw, then a scaled copy. Drawing per element, as the general row does, made channel dropout of (128, 16, 14, 14)
// take 2.37 ms forward and backward against 1.02 ms for the reference; one draw per run, 0.71 ms (1 thread,
// `python benchmarks/bench_ops_cpp.py --only dropout`, benchmarks/history/step_cost.md).
template <class S>
void dropout_run(uint64_t stream, double p, int64_t base, int64_t L, const S* x, const S* xt, S* y, S* yt) {
  const S mask = m::dropout_scale(m::uniform01(stream, static_cast<uint64_t>(base)), p, S(1) / (S(1) - S(p)));
#pragma omp simd
  for (int64_t j = 0; j < L; ++j) y[j] = x[j] * mask;
  if (yt) {
#pragma omp simd
    for (int64_t j = 0; j < L; ++j) yt[j] = xt[j] * mask;
  }
}

template <class S>
void dropout_loop(const Dropout& e) {
  // Rows: the trailing shared dims as one constant-mask run, else the last dimension. The mask index and the
  // example are found once per row.
  const int nd = e.ndim;
  int first_shared = nd;  // the trailing dims first_shared … nd − 1 are shared (the batch dim never is)
  while (first_shared > 0 && e.mask_stride[first_shared - 1] == 0) --first_shared;
  const bool constant_rows = first_shared < nd;
  const int row_dims = constant_rows ? first_shared : nd - 1;  // the dims that index the rows
  int64_t L = 1;
  for (int d = row_dims; d < nd; ++d) L *= e.sizes[d];
  const int64_t rows = e.numel / std::max<int64_t>(L, 1);
  const int64_t ms_last = e.mask_stride[nd - 1];
  const bool batch_last = e.batch_dim == nd - 1;
  const S* x = static_cast<const S*>(e.x);
  const S* xt = static_cast<const S*>(e.xt);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  at::parallel_for(0, rows, grain_rows(L), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t rem = r, base = 0, b = 0;
      for (int d = row_dims - 1; d >= 0; --d) {
        const int64_t i = rem % e.sizes[d];
        rem /= e.sizes[d];
        base += i * e.mask_stride[d];
        if (d == e.batch_dim) b = i;
      }
      const int64_t k = r * L;
      const S* xt_r = xt ? xt + k : nullptr;
      S* yt_r = yt ? yt + k : nullptr;
      if (constant_rows) {
        dropout_run<S>(e.stream, e.rate[b], base, L, x + k, xt_r, y + k, yt_r);
      } else if (batch_last) {
        dropout_row<S, true>(e.stream, e.rate, 0.0, base, ms_last, L, x + k, xt_r, y + k, yt_r);
      } else {
        dropout_row<S, false>(e.stream, e.rate, e.rate[b], base, ms_last, L, x + k, xt_r, y + k, yt_r);
      }
    }
  });
}

// ---------------------------------------------------------------- entry point of this instruction set
inline void dropout(const Dropout& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dropout_cpu", [&] { dropout_loop<scalar_t>(e); });
}
