// The LSTM cell's CPU loops, forward and backward, applying the formulas of lstm_cell_math.h. Included once per
// instruction set by lstm_cell_ops.cpp (common/isa_copies.h), inside a namespace of that set: no include guard,
// no includes. at::parallel_for (OpenMP) over rows, whole at::vec vectors along the hidden units. (The dense
// loops avoid at::vec, whose generic fallback compiled to per-lane code there; these loops use it for its exp
// and tanh, and were not timed against plain loops.)

namespace m = fastdstn::math;
template <class S>
using Vec = at::vec::Vectorized<S>;

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

template <class S>
inline Vec<S> vsigmoid(const Vec<S>& v) {
  const Vec<S> one(S(1));
  return one / (one + v.neg().exp());
}

template <class S>
void lstm_forward_loop(const LstmForward& e) {
  constexpr int64_t W = Vec<S>::size();
  const int64_t N = e.N, H = e.H;
  const auto [G, Gt, C0, Ct, Ho, Hto, Co, Cto] = LstmForwardData<S>(e);
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
        const Vec<S> tanh_c = cn.tanh();
        vstore(cn, Co + k, n);
        vstore((o * tanh_c), Ho + k, n);
        if (Hto) {
          const Vec<S> cnt = m::lstm_cell_tangent(i, f, g, c, load_or_zero(gtr, j, n), load_or_zero(gtr, H + j, n),
                                                  load_or_zero(gtr, 2 * H + j, n), load_or_zero(Ct, k, n));
          vstore(cnt, Cto + k, n);
          vstore(m::lstm_hidden_tangent(o, tanh_c, load_or_zero(gtr, 3 * H + j, n), cnt), Hto + k, n);
        }
      }
    }
  });
}

template <class S>
void lstm_backward_loop(const LstmBackward& e) {
  constexpr int64_t W = Vec<S>::size();
  const int64_t N = e.N, H = e.H;
  const auto [G, Gt, C0, Ct, gh, ght, gc, gct, dG, dGt, dC, dCt] = LstmBackwardData<S>(e);
  at::parallel_for(0, N, grain_rows(4 * H), [&](int64_t n0, int64_t n1) {
    for (int64_t r = n0; r < n1; ++r) {
      const S* gr = G + r * 4 * H;
      const S* gtr = Gt ? Gt + r * 4 * H : nullptr;
      for (int64_t j = 0; j < H; j += W) {
        const int64_t n = std::min<int64_t>(W, H - j), k = r * H + j, q = r * 4 * H + j;
        const Vec<S> i = vsigmoid(vload(gr + j, n)), f = vsigmoid(vload(gr + H + j, n));
        const Vec<S> g = vload(gr + 2 * H + j, n).tanh(), o = vsigmoid(vload(gr + 3 * H + j, n));
        const Vec<S> c = vload(C0 + k, n);
        const Vec<S> tanh_c = m::lstm_cell(i, f, g, c).tanh();
        const auto r_ = m::lstm_backward(i, f, g, o, c, tanh_c, load_or_zero(gtr, j, n), load_or_zero(gtr, H + j, n),
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

// ---------------------------------------------------------------- entry points of this instruction set
inline void lstm_forward(const LstmForward& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_lstm_forward_cpu", [&] { lstm_forward_loop<scalar_t>(e); });
}

inline void lstm_backward(const LstmBackward& e) {
  AT_DISPATCH_FLOATING_TYPES(e.dtype, "fastdstn_lstm_backward_cpu", [&] { lstm_backward_loop<scalar_t>(e); });
}
