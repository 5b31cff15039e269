// The pooling family's CPU loops. Included once per instruction set by pooling_ops.cpp (common/isa_copies.h),
// inside a namespace of that set: no include guard, no includes. at::parallel_for (OpenMP) over planes.
//
// Why fused: PyTorch's rule for the dual pass's max pooling is ATen's pooling kernel, a gather of the tangent at the
// argmax indices and, in the backward, a zero fill and a scatter: trips to memory for activations that do not stay
// in cache (SimpleCNN's first pool reads 6.4 MB). Here one pass reads x and ẋ and writes y, ẏ and the indices; the
// backward zeroes and scatters one plane at a time, in cache.

// ATen's window maximum, index for index: the first in-bounds tap starts as the argmax at -inf; a tap replaces it
// when greater or NaN (so the first of equal maxima stays, and the last NaN wins), the taps in row-major order.
//
// The loop runs tap by tap over all windows of a plane, as vector selects: the branch of a window-by-window loop
// is a coin toss on real activations. ATen's (N, C, H, W) kernel has it: 8.6 ms for SimpleCNN's first pool, against
// 1.4 ms here (1 thread, `python benchmarks/bench_cpu_env.py pooling`).
// Every plane has the same windows, so the tap offsets are tabulated once: taps[k·out_plane + o] is the plane offset
// of window o's k-th tap. A window clipped by the plane's edge has fewer than kh·kw taps; its first slots repeat its
// first in-bounds tap, which changes nothing: a tap never replaces an equal value, and a NaN only itself. A window
// with no tap in bounds (dilated taps stepping over a small plane) is refused: ATen gives it -inf and an index
// outside the plane.
inline std::vector<int32_t> tap_offsets(const PoolGeometry& g) {
  const int64_t out_plane = g.out_h * g.out_w, taps = g.kh * g.kw;
  std::vector<int32_t> table(taps * out_plane);
  std::vector<int32_t> inside;
  inside.reserve(taps);
  for (int64_t oh = 0; oh < g.out_h; ++oh) {
    for (int64_t ow = 0; ow < g.out_w; ++ow) {
      inside.clear();
      for (int64_t i = 0; i < g.kh; ++i) {
        const int64_t h = oh * g.sh - g.ph + i * g.dh;
        for (int64_t j = 0; j < g.kw; ++j) {
          const int64_t w = ow * g.sw - g.pw + j * g.dw;
          if (h >= 0 && h < g.in_h && w >= 0 && w < g.in_w) inside.push_back(static_cast<int32_t>(h * g.in_w + w));
        }
      }
      TORCH_CHECK(!inside.empty(), "fastdstn::max_pool2d_dual: dilation: the window at output (", oh, ", ", ow,
                  ") has no tap inside the input plane (", g.in_h, ", ", g.in_w, ")");
      const int64_t o = oh * g.out_w + ow, repeats = taps - static_cast<int64_t>(inside.size());
      for (int64_t k = 0; k < taps; ++k) table[k * out_plane + o] = inside[std::max<int64_t>(0, k - repeats)];
    }
  }
  return table;
}

template <class S>
void max_pool_dual_loop(const MaxPoolDual& e) {
  const int64_t in_plane = e.geo.in_h * e.geo.in_w, out_plane = e.geo.out_h * e.geo.out_w;
  const int64_t taps = e.geo.kh * e.geo.kw;
  const std::vector<int32_t> table = tap_offsets(e.geo);
  const S* x = static_cast<const S*>(e.x);
  const S* xt = static_cast<const S*>(e.xt);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  at::parallel_for(0, e.planes, grain_rows(in_plane), [&](int64_t p0, int64_t p1) {
    std::vector<int32_t> argmax(out_plane);
    for (int64_t p = p0; p < p1; ++p) {
      const S* __restrict xp = x + p * in_plane;
      S* __restrict top = y + p * out_plane;
      int32_t* __restrict best = argmax.data();
      const int32_t* __restrict first = table.data();
#pragma omp simd
      for (int64_t o = 0; o < out_plane; ++o) {
        top[o] = -std::numeric_limits<S>::infinity();
        best[o] = first[o];
      }
      for (int64_t k = 0; k < taps; ++k) {
        const int32_t* __restrict tap = table.data() + k * out_plane;
#pragma omp simd
        for (int64_t o = 0; o < out_plane; ++o) {
          const int32_t at = tap[o];
          const S v = xp[at], t = top[o];
          const bool take = v > t || v != v;
          top[o] = take ? v : t;
          best[o] = take ? at : best[o];
        }
      }
      int64_t* __restrict ip = e.indices + p * out_plane;
#pragma omp simd
      for (int64_t o = 0; o < out_plane; ++o) ip[o] = best[o];
      if (xt == nullptr) continue;
      const S* __restrict xtp = xt + p * in_plane;
      S* __restrict ytp = yt + p * out_plane;
#pragma omp simd
      for (int64_t o = 0; o < out_plane; ++o) ytp[o] = xtp[best[o]];
    }
  });
}

template <class S>
void max_pool_dual_backward_loop(const MaxPoolDualBackward& e) {
  const S* gy = static_cast<const S*>(e.grad_y);
  S* gx = static_cast<S*>(e.grad_x);
  std::atomic<int64_t> bad{0};
  at::parallel_for(0, e.planes, grain_rows(e.in_plane), [&](int64_t p0, int64_t p1) {
    int64_t skipped = 0;
    for (int64_t p = p0; p < p1; ++p) {
      S* gxp = gx + p * e.in_plane;
      const S* gyp = gy + p * e.out_plane;
      const int64_t* ip = e.indices + p * e.out_plane;
      std::fill(gxp, gxp + e.in_plane, S(0));
      for (int64_t o = 0; o < e.out_plane; ++o) {
        const int64_t at = ip[o];
        if (at < 0 || at >= e.in_plane) {
          ++skipped;
          continue;
        }
        gxp[at] += gyp[o];
      }
    }
    if (skipped) bad += skipped;
  });
  *e.bad = bad.load();
}

// ---------------------------------------------------------------- entry points of this instruction set
inline void max_pool_dual(const MaxPoolDual& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_max_pool_dual_cpu", [&] { max_pool_dual_loop<scalar_t>(e); });
}

inline void max_pool_dual_backward(const MaxPoolDualBackward& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_max_pool_dual_backward_cpu",
                             [&] { max_pool_dual_backward_loop<scalar_t>(e); });
}
