// The CPU loops of the STN ops, included once per instruction set by epilogue_cpu.cpp, inside a
// namespace of that set (no include guard, no includes: epilogue_cpu.cpp includes what they use
// before the first inclusion). at::parallel_for (OpenMP) over rows or (example, channel) pairs, plain
// loops over the contiguous inner dimension, applying the formulas of stn_math.h.

namespace m = fastdstn::math;
template <class S>
using Vec = at::vec::Vectorized<S>;

// Elements per parallel task: below this, threads cost more than they save.
constexpr int64_t kGrainElements = 16384;

// Full-width loads/stores where the vector fits and the counted (zero-filling) forms only in the
// tail: the counted forms go through a variable-length memcpy, which made the linear epilogue ~10x
// slower (0.9 ms instead of ~0.1 ms at 128x1024, 1 thread).
template <class S>
inline Vec<S> vload(const S* p, int64_t n) {
  return n == Vec<S>::size() ? Vec<S>::loadu(p) : Vec<S>::loadu(p, n);
}

template <class S>
inline void vstore(const Vec<S>& v, S* p, int64_t n) {
  if (n == Vec<S>::size()) {
    v.store(p);
  } else {
    v.store(p, n);
  }
}

template <class S>
inline Vec<S> load_or_zero(const S* p, int64_t i, int64_t n) {
  return p ? vload(p + i, n) : Vec<S>(S(0));
}

inline int64_t grain_rows(int64_t row_elements) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(1, row_elements));
}

inline bool is_plain(const Operand& o, int64_t C, int64_t P) {
  return o.batch_stride == C * P && o.first == 0 && o.opg == C;
}

// ---------------------------------------------------------------- dense epilogues
// Plain loops over the contiguous inner dimension with `#pragma omp simd`, applying the scalar
// instantiation of stn_math.h. Why not at::vec here: an extension is compiled without ATen's
// CPU_CAPABILITY flags, so at::vec::Vectorized is its generic array fallback, which GCC compiled
// to per-lane scalar code through the stack. Measured on this machine, stn_linear_dual forward at
// B=2048, in=1, out=1024 (GEMMs trivial), 1 thread, time above the bare GEMMs: 9.6 ms with at::vec,
// ~2.5 ms with these loops (the reference's unfused passes: ~15 ms).
template <class S>
void dense_forward_rows(const DenseForward& e) {
  // P == 1 and plain operands (the linear layer): rows of C contiguous channels. Absent operands
  // (b_g, b_r and t, ẋ·W_gᵀ) read a row of zeros, so the loops carry no branches and vectorize.
  const int64_t B = e.B, C = e.C, stw = e.has_t ? 2 * C : C;
  const std::vector<S> zeros(static_cast<size_t>(C), S(0));
  const S* zg = static_cast<const S*>(e.zg.data);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* w = static_cast<const S*>(e.w);
  const S* st = static_cast<const S*>(e.st);
  const S* bg = e.bg ? static_cast<const S*>(e.bg) : zeros.data();
  const S* br = e.br ? static_cast<const S*>(e.br) : zeros.data();
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
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
  const int64_t B = e.B, C = e.C, P = e.P, stw = e.has_t ? 2 * C : C;
  const S* zg = static_cast<const S*>(e.zg.data);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* w = static_cast<const S*>(e.w);
  const S* st = static_cast<const S*>(e.st);
  const S* bg = static_cast<const S*>(e.bg);
  const S* br = static_cast<const S*>(e.br);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  S* u = static_cast<S*>(e.u);
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
  S* dVt(int64_t k) { return e_.dV ? partial_.data() + k * width_ : nullptr; }
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
  const int64_t B = e.B, C = e.C, H = e.H, stw = e.has_t ? 2 * C : C;
  const S* g = static_cast<const S*>(e.g);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* st = static_cast<const S*>(e.st);
  const S* br = static_cast<const S*>(e.br);
  const S* h = static_cast<const S*>(e.h);
  const S* gsrc = static_cast<const S*>(e.gsrc);
  S* a = static_cast<S*>(e.a.data);
  S* gcopy = static_cast<S*>(e.gcopy.data);
  S* dst = static_cast<S*>(e.dst);
  S* tg = static_cast<S*>(e.tg);
  const int64_t chunks = chunk_count(B, grain_rows(C));
  BatchReductions<S> sums(e, chunks);
  for_chunks(B, chunks, [&](int64_t b0, int64_t b1, int64_t k) {
    S* dVt = sums.dVt(k);
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
      if (dVt) {
        for (int64_t j = 0; j < H; ++j) {
          const S hj = h[b * H + j];
          S* acc = dVt + j * stw;
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
  const int64_t B = e.B, C = e.C, P = e.P, H = e.H, stw = e.has_t ? 2 * C : C;
  const S* g = static_cast<const S*>(e.g);
  const S* zr = static_cast<const S*>(e.zr.data);
  const S* st = static_cast<const S*>(e.st);
  const S* br = static_cast<const S*>(e.br);
  const S* h = static_cast<const S*>(e.h);
  const S* gsrc = static_cast<const S*>(e.gsrc);
  S* a = static_cast<S*>(e.a.data);
  S* gcopy = static_cast<S*>(e.gcopy.data);
  S* dst = static_cast<S*>(e.dst);
  S* tg = static_cast<S*>(e.tg);
  const int64_t chunks = chunk_count(B * C, grain_rows(P));
  BatchReductions<S> sums(e, chunks);
  const bool plane_sums = dst || tg || sums.active();
  for_chunks(B * C, chunks, [&](int64_t q0, int64_t q1, int64_t k) {
    S* dVt = sums.dVt(k);
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
      if (dVt) {
        for (int64_t j = 0; j < H; ++j) {
          dVt[j * stw + c] += h[b * H + j] * sgz;
          if (e.has_t) dVt[j * stw + C + c] += h[b * H + j] * sg;
        }
      }
      if (dbr) dbr[c] += sg * t;
    }
  });
  if (sums.active()) sums.finish(chunks);
}

// [s | t] = h·Vᵀ row by row: out[b, :] = Σ_j h[b, j]·Vᵀ[j, :], contiguous axpys over R.
template <class S>
void small_product_loop(const S* h, const S* Vt, S* out, int64_t B, int64_t H, int64_t R) {
  at::parallel_for(0, B, grain_rows(R * H), [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      S* o = out + b * R;
      const S* hb = h + b * H;
#pragma omp simd
      for (int64_t r = 0; r < R; ++r) o[r] = hb[0] * Vt[r];
      for (int64_t j = 1; j < H; ++j) {
        const S hj = hb[j];
        const S* v = Vt + j * R;
#pragma omp simd
        for (int64_t r = 0; r < R; ++r) o[r] += hj * v[r];
      }
    }
  });
}

// ---------------------------------------------------------------- LSTM cell
template <class S>
inline Vec<S> vsigmoid(const Vec<S>& v) {
  const Vec<S> one(S(1));
  return one / (one + v.neg().exp());
}

template <class S>
void lstm_forward_loop(const LstmForward& e) {
  constexpr int64_t W = Vec<S>::size();
  const int64_t N = e.N, H = e.H;
  const S *G = static_cast<const S*>(e.gates), *Gt = static_cast<const S*>(e.gates_t);
  const S *C0 = static_cast<const S*>(e.c), *Ct = static_cast<const S*>(e.c_t);
  S *Ho = static_cast<S*>(e.h), *Hto = static_cast<S*>(e.ht);
  S *Co = static_cast<S*>(e.c_new), *Cto = static_cast<S*>(e.ct_new);
  at::parallel_for(0, N, grain_rows(4 * H), [&](int64_t n0, int64_t n1) {
    for (int64_t r = n0; r < n1; ++r) {
      const S* gr = G + r * 4 * H;
      const S* gtr = Gt ? Gt + r * 4 * H : nullptr;
      for (int64_t j = 0; j < H; j += W) {
        const int64_t n = std::min<int64_t>(W, H - j), k = r * H + j;
        const Vec<S> i = vsigmoid(vload(gr + j, n)), f = vsigmoid(vload(gr + H + j, n));
        const Vec<S> g = vload(gr + 2 * H + j, n).tanh(), o = vsigmoid(vload(gr + 3 * H + j, n));
        const Vec<S> c = vload(C0 + k, n);
        const Vec<S> cn = m::lstm_cell(i, f, g, c);
        const Vec<S> tc = cn.tanh();
        vstore(cn, Co + k, n);
        vstore((o * tc), Ho + k, n);
        if (Hto) {
          const Vec<S> cnt = m::lstm_cell_tangent(i, f, g, c, load_or_zero(gtr, j, n), load_or_zero(gtr, H + j, n),
                                                  load_or_zero(gtr, 2 * H + j, n), load_or_zero(Ct, k, n));
          vstore(cnt, Cto + k, n);
          vstore(m::lstm_hidden_tangent(o, tc, load_or_zero(gtr, 3 * H + j, n), cnt), Hto + k, n);
        }
      }
    }
  });
}

template <class S>
void lstm_backward_loop(const LstmBackward& e) {
  constexpr int64_t W = Vec<S>::size();
  const int64_t N = e.N, H = e.H;
  const S *G = static_cast<const S*>(e.gates), *Gt = static_cast<const S*>(e.gates_t);
  const S *C0 = static_cast<const S*>(e.c), *Ct = static_cast<const S*>(e.c_t);
  const S *gh = static_cast<const S*>(e.gh), *ght = static_cast<const S*>(e.ght);
  const S *gc = static_cast<const S*>(e.gc), *gct = static_cast<const S*>(e.gct);
  S *dG = static_cast<S*>(e.dgates), *dGt = static_cast<S*>(e.dgates_t);
  S *dC = static_cast<S*>(e.dc), *dCt = static_cast<S*>(e.dc_t);
  at::parallel_for(0, N, grain_rows(4 * H), [&](int64_t n0, int64_t n1) {
    for (int64_t r = n0; r < n1; ++r) {
      const S* gr = G + r * 4 * H;
      const S* gtr = Gt ? Gt + r * 4 * H : nullptr;
      for (int64_t j = 0; j < H; j += W) {
        const int64_t n = std::min<int64_t>(W, H - j), k = r * H + j, q = r * 4 * H + j;
        const Vec<S> i = vsigmoid(vload(gr + j, n)), f = vsigmoid(vload(gr + H + j, n));
        const Vec<S> g = vload(gr + 2 * H + j, n).tanh(), o = vsigmoid(vload(gr + 3 * H + j, n));
        const Vec<S> c = vload(C0 + k, n);
        const Vec<S> tc = m::lstm_cell(i, f, g, c).tanh();
        const auto r_ = m::lstm_backward(i, f, g, o, c, tc, load_or_zero(gtr, j, n), load_or_zero(gtr, H + j, n),
                                         load_or_zero(gtr, 2 * H + j, n), load_or_zero(gtr, 3 * H + j, n),
                                         load_or_zero(Ct, k, n), load_or_zero(gh, k, n), load_or_zero(ght, k, n),
                                         load_or_zero(gc, k, n), load_or_zero(gct, k, n));
        if (dG) {
          vstore(r_.dai, dG + q, n);
          vstore(r_.daf, dG + q + H, n);
          vstore(r_.dag, dG + q + 2 * H, n);
          vstore(r_.dao, dG + q + 3 * H, n);
        }
        if (dGt) {
          vstore(r_.dait, dGt + q, n);
          vstore(r_.daft, dGt + q + H, n);
          vstore(r_.dagt, dGt + q + 2 * H, n);
          vstore(r_.daot, dGt + q + 3 * H, n);
        }
        if (dC) vstore(r_.dc, dC + k, n);
        if (dCt) vstore(r_.dct, dCt + k, n);
      }
    }
  });
}

// ---------------------------------------------------------------- dropout
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

template <class S>
void dropout_loop(const Dropout& e) {
  // Rows of the last dimension: the mask index and the example are found once per row.
  const int nd = e.ndim;
  const int64_t L = e.sizes[nd - 1], rows = e.numel / std::max<int64_t>(L, 1);
  const int64_t ms_last = e.mask_stride[nd - 1];
  const bool batch_last = e.batch_dim == nd - 1;
  const S* x = static_cast<const S*>(e.x);
  const S* xt = static_cast<const S*>(e.xt);
  S* y = static_cast<S*>(e.y);
  S* yt = static_cast<S*>(e.yt);
  at::parallel_for(0, rows, grain_rows(L), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      int64_t rem = r, base = 0, b = 0;
      for (int d = nd - 2; d >= 0; --d) {
        const int64_t i = rem % e.sizes[d];
        rem /= e.sizes[d];
        base += i * e.mask_stride[d];
        if (d == e.batch_dim) b = i;
      }
      const int64_t k = r * L;
      const S* xt_r = xt ? xt + k : nullptr;
      S* yt_r = yt ? yt + k : nullptr;
      if (batch_last) {
        dropout_row<S, true>(e.stream, e.rate, 0.0, base, ms_last, L, x + k, xt_r, y + k, yt_r);
      } else {
        dropout_row<S, false>(e.stream, e.rate, e.rate[b], base, ms_last, L, x + k, xt_r, y + k, yt_r);
      }
    }
  });
}

// ---------------------------------------------------------------- entry points of this instruction set
inline void dense_forward(const DenseForward& e) {
  const bool rows = e.P == 1 && is_plain(e.zg, e.C, 1) && is_plain(e.zr, e.C, 1);
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dense_forward_cpu", [&] {
    rows ? dense_forward_rows<scalar_t>(e) : dense_forward_planes<scalar_t>(e);
  });
}

inline void dense_backward(const DenseBackward& e) {
  const bool rows = e.P == 1 && is_plain(e.zr, e.C, 1) && (!e.a.data || is_plain(e.a, e.C, 1)) &&
                    (!e.gcopy.data || is_plain(e.gcopy, e.C, 1));
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dense_backward_cpu", [&] {
    rows ? dense_backward_rows<scalar_t>(e) : dense_backward_planes<scalar_t>(e);
  });
}

// out (B, R) = h (B, H, contiguous) · Vᵀ.
inline void small_product(const at::Tensor& h, const at::Tensor& V, const at::Tensor& out) {
  const int64_t B = h.size(0), H = h.size(1), R = V.size(0);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "fastdstn_small_product_cpu", [&] {
    // Vᵀ by hand: V.t().contiguous() went through a TensorIterator copy, ~5 µs even for a 4 × 3 V.
    std::vector<scalar_t> Vt(static_cast<size_t>(H * R));
    const auto v = V.accessor<scalar_t, 2>();
    for (int64_t r = 0; r < R; ++r) {
      for (int64_t j = 0; j < H; ++j) Vt[j * R + r] = v[r][j];
    }
    small_product_loop<scalar_t>(h.data_ptr<scalar_t>(), Vt.data(), out.data_ptr<scalar_t>(), B, H, R);
  });
}

inline void lstm_forward(const LstmForward& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_lstm_forward_cpu", [&] { lstm_forward_loop<scalar_t>(e); });
}

inline void lstm_backward(const LstmBackward& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_lstm_backward_cpu", [&] { lstm_backward_loop<scalar_t>(e); });
}

inline void dropout(const Dropout& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_dropout_cpu", [&] { dropout_loop<scalar_t>(e); });
}
