"""Run by tests/ops/machine/test_cpu_isa.py in a subprocess with FASTDSTN_CPU_ISA set: computes the compiled CPU ops'
outputs and gradients on fixed inputs and saves them, with the instruction set in use, (torch.save) to the path
given as argv[1]."""
import sys
from types import SimpleNamespace

import torch

from fastdstn.ops import cpp, dispatch

# The compiled backend's functions (each family's cpp.py).
compiled = SimpleNamespace(**{op: dispatch.implementation("cpp", op) for op in (
    "stn_linear", "stn_linear_dual", "stn_conv2d_dual", "lstm_cell_dual", "dropout_dual", "penalty_row_sums",
    "penalty_row_combination", "max_pool2d_dual", "max_pool2d_dual_backward")})


def _leaves(gen, *shapes, dtype=torch.float64):
    return [torch.randn(*s, generator=gen, dtype=dtype).requires_grad_() for s in shapes]


def outputs():
    gen = torch.Generator().manual_seed(0)
    out = {}
    # linear, dual and nonlinear: sizes off the vector width, H = 7 (the direct [s|t] loops)
    x, xt, eps, Wg, bg, Wr, br, V = _leaves(gen, (33, 77), (33, 77), (33, 7), (129, 77), (129,), (129, 77), (129,),
                                            (258, 7))
    for name, (y, yt) in {"linear_dual": compiled.stn_linear_dual(x, xt, eps, Wg, bg, Wr, br, V)}.items():
        out[name] = [y, yt, *torch.autograd.grad((y.sin() + yt.cos()).sum(), (x, xt, eps, Wg, bg, Wr, br, V))]
    y = compiled.stn_linear(x, eps, Wg, bg, Wr, br, V)
    out["linear"] = [y, *torch.autograd.grad(y.sin().sum(), (x, eps, Wg, bg, Wr, br, V))]
    # grouped convolution, dual
    x, xt, eps, Wg, bg, Wr, br, V = _leaves(gen, (3, 4, 9, 9), (3, 4, 9, 9), (3, 5), (6, 2, 3, 3), (6,), (6, 2, 3, 3),
                                            (6,), (12, 5))
    y, yt = compiled.stn_conv2d_dual(x, xt, eps, Wg, bg, Wr, br, V, (1, 1), (1, 1), (1, 1), 2)
    out["conv_dual"] = [y, yt, *torch.autograd.grad((y.sin() + yt.cos()).sum(), (x, xt, eps, Wg, bg, Wr, br, V))]
    # LSTM cell
    gates, gates_t, c, c_t = _leaves(gen, (5, 4 * 13), (5, 4 * 13), (5, 13), (5, 13))
    h, ht, c1, ct1 = compiled.lstm_cell_dual(gates, gates_t, c, c_t)
    out["lstm"] = [h, ht, c1, ct1, *torch.autograd.grad((h * ht + c1 * ct1).sum(), (gates, gates_t, c, c_t))]
    # dropout: a rate per example along dim 0, and along the last dim
    x = torch.randn(6, 37, 11, generator=gen, dtype=torch.float32)
    rate = torch.linspace(0.05, 0.9, 6)
    out["dropout"] = [compiled.dropout_dual(x, x, rate, 1234, 0, ())[0],
                      compiled.dropout_dual(x.transpose(0, 2).contiguous(), None, rate, 99, 2, (1,))[0],
                      compiled.dropout_dual(x, x, rate, 5, 0, (2,))[1]]     # one draw per run of 11
    # the weight penalty's passes: rows off the vector width
    g, r = torch.randn(2, 13, 3, 3, 3, generator=gen, dtype=torch.float64)
    a, b = torch.randn(2, 13, generator=gen, dtype=torch.float64)
    out["penalty"] = [compiled.penalty_row_sums(g, r), compiled.penalty_row_combination(a, g, b, r)]
    # max pooling: windows clipped by the padding, planes off the vector width, ties
    x = torch.randint(0, 4, (3, 5, 13, 11), generator=gen).double()
    y, yt, indices = compiled.max_pool2d_dual(x, x.cos(), [3, 3], [2, 2], [1, 1], [1, 1], True)
    out["max_pool"] = [y, yt, indices, compiled.max_pool2d_dual_backward(yt, indices, (13, 11))]
    # attention dropout's keep mask (uint64_t Philox words in the AVX-512 copy, uint32_t in the others)
    from fastdstn.ops.attention import cpp as attention
    out["attention_keep_mask"] = [attention.keep_mask(2 ** 40 + 7, rate, 3, 17, 45, dtype)
                                  for dtype in (torch.float32, torch.float64, torch.bfloat16)]
    return {k: [t.detach() for t in v] for k, v in out.items()}


if __name__ == "__main__":
    torch.save({"isa": cpp.CPU_ISA, "outputs": outputs()}, sys.argv[1])
