// The penalty family's CPU loops. Included once per instruction set by penalty_ops.cpp (common/isa_copies.h),
// inside a namespace of that set: no include guard, no includes. at::parallel_for (OpenMP) over rows.
//
// Why fused: each pass of ATen's expressions over a weight is a trip to memory, and ResNet-18's 11 M general
// and 11 M response weights do not stay in cache between the layers' passes: its response penalty and gradient
// took 31.7 ms in ATen's expressions, 16.8 ms here (2 threads, `python benchmarks/bench_ops_cpp.py --only penalty`).

// kLanes independent partial sums per quantity, so that the compiler can keep them in vector registers without
// reassociating one sum (no -ffast-math); float64 partials for every input dtype.
constexpr int64_t kLanes = 8;

template <class S>
void row_sums_loop(const RowSums& e) {
  const S* g = static_cast<const S*>(e.g);
  const S* r = static_cast<const S*>(e.r);
  S* out = static_cast<S*>(e.out);
  const int64_t n = e.cols, body = n - n % kLanes;
  at::parallel_for(0, e.rows, grain_rows(n), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const S* gk = g + k * n;
      const S* rk = r + k * n;
      double gg[kLanes] = {0}, gr[kLanes] = {0}, rr[kLanes] = {0};
      for (int64_t i = 0; i < body; i += kLanes) {
#pragma omp simd
        for (int64_t j = 0; j < kLanes; ++j) {
          const double x = gk[i + j], y = rk[i + j];
          gg[j] += x * x;
          gr[j] += x * y;
          rr[j] += y * y;
        }
      }
      for (int64_t i = body; i < n; ++i) {
        const double x = gk[i], y = rk[i];
        gg[0] += x * x;
        gr[0] += x * y;
        rr[0] += y * y;
      }
      double sgg = 0, sgr = 0, srr = 0;
      for (int64_t j = 0; j < kLanes; ++j) {
        sgg += gg[j];
        sgr += gr[j];
        srr += rr[j];
      }
      out[k] = static_cast<S>(sgg);
      out[e.rows + k] = static_cast<S>(sgr);
      out[2 * e.rows + k] = static_cast<S>(srr);
    }
  });
}

template <class S>
void row_combination_loop(const RowCombination& e) {
  const S* g = static_cast<const S*>(e.g);
  const S* r = static_cast<const S*>(e.r);
  S* out = static_cast<S*>(e.out);
  const int64_t n = e.cols;
  at::parallel_for(0, e.rows, grain_rows(n), [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) {
      const S a = static_cast<S>(e.a[k]), b = static_cast<S>(e.b[k]);
      const S* gk = g + k * n;
      const S* rk = r + k * n;
      S* ok = out + k * n;
#pragma omp simd
      for (int64_t i = 0; i < n; ++i) ok[i] = a * gk[i] + b * rk[i];
    }
  });
}

// ---------------------------------------------------------------- entry points of this instruction set
inline void row_sums(const RowSums& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_row_sums_cpu", [&] { row_sums_loop<scalar_t>(e); });
}

inline void row_combination(const RowCombination& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_row_combination_cpu", [&] { row_combination_loop<scalar_t>(e); });
}
