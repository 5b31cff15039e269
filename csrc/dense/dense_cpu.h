// The dense family's CPU loops: the forward and backward epilogues of the linear and conv ops and the small
// product [s | t] = h·Vᵀ, applying the formulas of dense_math.h. Included once per instruction set by
// dense_ops.cpp (common/isa_copies.h), inside a namespace of that set: no include guard, no includes.
// at::parallel_for (OpenMP) over rows or (example, channel) planes, plain loops over the contiguous inner
// dimension.

namespace m = fastdstn::math;

// Plain loops over the contiguous inner dimension with `#pragma omp simd`, applying the scalar
// instantiation of dense_math.h. Why not at::vec here: an extension is compiled without ATen's
// CPU_CAPABILITY flags, so at::vec::Vectorized is its generic array fallback, which GCC compiled
// to per-lane scalar code through the stack: stn_linear_dual forward at B=2048, in=1, out=1024 (GEMMs
// trivial), 1 thread, time above the bare GEMMs: 9.6 ms with at::vec, ~2.5 ms with these loops (the
// reference's unfused passes: ~15 ms).
template <class S>
void dense_forward_rows(const DenseForward& e) {
  // P == 1 and plain operands (the linear layer): rows of C contiguous channels. Absent operands
  // (b_g, b_r and t, ẋ·W_gᵀ) read a row of zeros, so the loops carry no branches and vectorize.
  const int64_t B = e.B, C = e.C;
  const std::vector<S> zeros(static_cast<size_t>(C), S(0));
  const auto [zg, zr, w, st, bg_or_null, br_or_null, y, yt, u, stw] = DenseForwardData<S>(e);
  const S* bg = bg_or_null ? bg_or_null : zeros.data();
  const S* br = br_or_null ? br_or_null : zeros.data();
  at::parallel_for(0, B, grain_rows(C), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const S* s = st + b * stw;
      const S* t = e.has_t ? s + C : zeros.data();
      const S* zg_r = zg + b * C;
      const S* zr_r = zr + b * C;
      S* y_r = y ? y + b * C : nullptr;
      if (yt == nullptr) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) y_r[c] = m::stn_output(zg_r[c], bg[c], s[c], zr_r[c], t[c], br[c]);
      } else {
        S* yt_r = yt + b * C;
        const S* w_r = w ? w + b * C : zeros.data();
        if (y) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) y_r[c] = m::stn_primal(zg_r[c], bg[c]);
        }
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) yt_r[c] = m::stn_tangent(w_r[c], s[c], zr_r[c], t[c], br[c]);
      }
    }
  });
}

template <class S>
void dense_forward_planes(const DenseForward& e) {
  // One (example, channel) plane of P pixels per step; s, t, b_g, b_r are constants of the plane.
  const int64_t B = e.B, C = e.C, P = e.P;
  const auto [zg, zr, w, st, bg, br, y, yt, u, stw] = DenseForwardData<S>(e);
  at::parallel_for(0, B * C, grain_rows(P), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / C, c = q % C;
      const S s = st[b * stw + c], t = e.has_t ? st[b * stw + C + c] : S(0);
      const S vbg = bg ? bg[c] : S(0), vbr = br ? br[c] : S(0);
      const S* zg_p = zg + b * e.zg.batch_stride + e.zg.channel(c) * P;
      const S* zr_p = zr + b * e.zr.batch_stride + e.zr.channel(c) * P;
      if (u) std::copy(zr_p, zr_p + P, u + q * P);
      S* y_p = y ? y + q * P : nullptr;
      if (yt == nullptr) {
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) y_p[p] = m::stn_output(zg_p[p], vbg, s, zr_p[p], t, vbr);
      } else {
        S* yt_p = yt + q * P;
        if (y) {
#pragma omp simd
          for (int64_t p = 0; p < P; ++p) y_p[p] = m::stn_primal(zg_p[p], vbg);
        }
        if (w) {
          const S* w_p = w + q * P;
#pragma omp simd
          for (int64_t p = 0; p < P; ++p) yt_p[p] = m::stn_tangent(w_p[p], s, zr_p[p], t, vbr);
        } else {
#pragma omp simd
          for (int64_t p = 0; p < P; ++p) yt_p[p] = m::stn_tangent(S(0), s, zr_p[p], t, vbr);
        }
      }
    }
  });
}

// The batch reductions of the backward epilogue (∂V = ∂[s|t]ᵀ·h and ∂b_r): every chunk of the work
// accumulates into its own partial sums, which are added in chunk order at the end, so the result
// does not depend on which thread ran which chunk. ∂t's column is b_r·Σ_b h·Σ_p g: the b_r factor
// is applied once, after the reduction.
template <class S>
class BatchReductions {
 public:
  BatchReductions(const DenseBackward& e, int64_t chunks)
      : e_(e), R_(e.has_t ? 2 * e.C : e.C), width_((e.dV ? e.H * R_ : 0) + (e.dbr ? e.C : 0)),
        partial_(static_cast<size_t>(chunks * width_), S(0)) {}

  bool active() const { return width_ > 0; }
  // Chunk k's (H, R) accumulator of hᵀ·[Σ_p g⊙z_r | Σ_p g] (null when ∂V is not asked for).
  S* dV_transposed(int64_t k) { return e_.dV ? partial_.data() + k * width_ : nullptr; }
  // Chunk k's (C) accumulator of Σ t·Σ_p g (null when ∂b_r is not asked for).
  S* dbr(int64_t k) { return e_.dbr ? partial_.data() + k * width_ + (e_.dV ? e_.H * R_ : 0) : nullptr; }

  void finish(int64_t chunks) {
    const int64_t C = e_.C, H = e_.H;
    std::vector<S> total(static_cast<size_t>(width_), S(0));
    for (int64_t k = 0; k < chunks; ++k) {
      const S* p = partial_.data() + k * width_;
#pragma omp simd
      for (int64_t i = 0; i < width_; ++i) total[i] += p[i];
    }
    if (e_.dV) {
      S* dV = static_cast<S*>(e_.dV);
      const S* br = static_cast<const S*>(e_.br);
      for (int64_t j = 0; j < R_; ++j) {
        const S scale = j < C ? S(1) : br[j - C];
        for (int64_t k = 0; k < H; ++k) dV[j * H + k] = scale * total[k * R_ + j];
      }
    }
    if (e_.dbr) std::copy(total.end() - C, total.end(), static_cast<S*>(e_.dbr));
  }

 private:
  const DenseBackward& e_;
  const int64_t R_, width_;
  std::vector<S> partial_;
};

// Splits [0, n) into `chunks` fixed pieces and runs body(begin, end, chunk) on each, in parallel.
template <class F>
void for_chunks(int64_t n, int64_t chunks, const F& body) {
  at::parallel_for(0, chunks, 1, [&](int64_t k0, int64_t k1) {
    for (int64_t k = k0; k < k1; ++k) body(n * k / chunks, n * (k + 1) / chunks, k);
  });
}

inline int64_t chunk_count(int64_t n, int64_t grain) {
  return std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), (n + grain - 1) / grain));
}

template <class S>
void dense_backward_rows(const DenseBackward& e) {
  const int64_t B = e.B, C = e.C, H = e.H;
  const auto [g, zr, st, br, h, gsrc, a, gcopy, dst, tg, stw] = DenseBackwardData<S>(e);
  const int64_t chunks = chunk_count(B, grain_rows(C));
  BatchReductions<S> sums(e, chunks);
  for_chunks(B, chunks, [&](int64_t b0, int64_t b1, int64_t k) {
    S* dV_transposed = sums.dV_transposed(k);
    S* dbr = sums.dbr(k);
    for (int64_t b = b0; b < b1; ++b) {
      const S* s = st + b * stw;
      const S* g_r = g + b * C;
      const S* zr_r = zr + b * C;
      if (a) {
        S* a_r = a + b * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) a_r[c] = m::stn_response_cotangent(s[c], g_r[c]);
      }
      if (gcopy) std::copy(gsrc + b * C, gsrc + (b + 1) * C, gcopy + b * C);
      if (dst) {
        S* ds = dst + b * stw;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) ds[c] = m::stn_scale_grad(g_r[c], zr_r[c]);
        if (e.has_t) {
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) ds[C + c] = g_r[c] * br[c];
        }
      }
      if (tg) {
        S* tg_r = tg + b * C;
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) tg_r[c] = g_r[c] * s[C + c];
      }
      if (dV_transposed) {
        for (int64_t j = 0; j < H; ++j) {
          const S hj = h[b * H + j];
          S* acc = dV_transposed + j * stw;
#pragma omp simd
          for (int64_t c = 0; c < C; ++c) acc[c] += hj * m::stn_scale_grad(g_r[c], zr_r[c]);
          if (e.has_t) {
#pragma omp simd
            for (int64_t c = 0; c < C; ++c) acc[C + c] += hj * g_r[c];
          }
        }
      }
      if (dbr) {
#pragma omp simd
        for (int64_t c = 0; c < C; ++c) dbr[c] += g_r[c] * s[C + c];
      }
    }
  });
  if (sums.active()) sums.finish(chunks);
}

template <class S>
void dense_backward_planes(const DenseBackward& e) {
  const int64_t B = e.B, C = e.C, P = e.P, H = e.H;
  const auto [g, zr, st, br, h, gsrc, a, gcopy, dst, tg, stw] = DenseBackwardData<S>(e);
  const int64_t chunks = chunk_count(B * C, grain_rows(P));
  BatchReductions<S> sums(e, chunks);
  const bool plane_sums = dst || tg || sums.active();
  for_chunks(B * C, chunks, [&](int64_t q0, int64_t q1, int64_t k) {
    S* dV_transposed = sums.dV_transposed(k);
    S* dbr = sums.dbr(k);
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t b = q / C, c = q % C;
      const S s = st[b * stw + c];
      const S* g_p = g + q * P;
      const S* zr_p = zr + b * e.zr.batch_stride + e.zr.channel(c) * P;
      if (a) {
        S* a_p = a + b * e.a.batch_stride + e.a.channel(c) * P;
#pragma omp simd
        for (int64_t p = 0; p < P; ++p) a_p[p] = m::stn_response_cotangent(s, g_p[p]);
      }
      if (gcopy) std::copy(gsrc + q * P, gsrc + (q + 1) * P, gcopy + b * e.gcopy.batch_stride + e.gcopy.channel(c) * P);
      if (!plane_sums) continue;
      S sg = 0, sgz = 0;
#pragma omp simd reduction(+ : sg, sgz)
      for (int64_t p = 0; p < P; ++p) {
        sg += g_p[p];
        sgz += m::stn_scale_grad(g_p[p], zr_p[p]);
      }
      const S t = e.has_t ? st[b * stw + C + c] : S(0);
      if (dst) {
        dst[b * stw + c] = sgz;
        if (e.has_t) dst[b * stw + C + c] = sg * br[c];
      }
      if (tg) tg[q] = sg * t;
      if (dV_transposed) {
        for (int64_t j = 0; j < H; ++j) {
          dV_transposed[j * stw + c] += h[b * H + j] * sgz;
          if (e.has_t) dV_transposed[j * stw + C + c] += h[b * H + j] * sg;
        }
      }
      if (dbr) dbr[c] += sg * t;
    }
  });
  if (sums.active()) sums.finish(chunks);
}

// [s | t] = h·Vᵀ row by row: out[b, :] = Σ_j h[b, j]·Vᵀ[j, :], contiguous axpys over R.
template <class S>
void small_product_loop(const S* h, const S* V_transposed, S* out, int64_t B, int64_t H, int64_t R) {
  at::parallel_for(0, B, grain_rows(R * H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      S* o = out + b * R;
      const S* hb = h + b * H;
#pragma omp simd
      for (int64_t r = 0; r < R; ++r) o[r] = hb[0] * V_transposed[r];
      for (int64_t j = 1; j < H; ++j) {
        const S hj = hb[j];
        const S* v = V_transposed + j * R;
#pragma omp simd
        for (int64_t r = 0; r < R; ++r) o[r] += hj * v[r];
      }
    }
  });
}

// ---------------------------------------------------------------- entry points of this instruction set
inline void dense_forward(const DenseForward& e) {
  const bool rows = e.P == 1 && e.zg.plain(e.C, 1) && e.zr.plain(e.C, 1);
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dense_forward_cpu", [&] {
    rows ? dense_forward_rows<scalar_t>(e) : dense_forward_planes<scalar_t>(e);
  });
}

inline void dense_backward(const DenseBackward& e) {
  const bool rows = e.P == 1 && e.zr.plain(e.C, 1) && (!e.a.data || e.a.plain(e.C, 1)) &&
                    (!e.gcopy.data || e.gcopy.plain(e.C, 1));
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dense_backward_cpu", [&] {
    rows ? dense_backward_rows<scalar_t>(e) : dense_backward_planes<scalar_t>(e);
  });
}

// out (B, R) = h (B, H, contiguous) · Vᵀ.
inline void small_product(const at::Tensor& h, const at::Tensor& V, const at::Tensor& out) {
  const int64_t B = h.size(0), H = h.size(1), R = V.size(0);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "fastdstn_small_product_cpu", [&] {
    // Vᵀ by hand: V.t().contiguous() went through a TensorIterator copy, ~5 µs even for a 4 × 3 V.
    std::vector<scalar_t> V_transposed(static_cast<size_t>(H * R));
    const auto v = V.accessor<scalar_t, 2>();
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t j = 0; j < H; ++j) V_transposed[j * R + r] = v[r][j];
    }
    small_product_loop<scalar_t>(h.data_ptr<scalar_t>(), V_transposed.data(), out.data_ptr<scalar_t>(), B, H, R);
  });
}
