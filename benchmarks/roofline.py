"""Write benchmarks/ROOFLINE.md: the case for the fused Triton kernels, on paper, from the shapes.

For each Triton kernel of fastdstn.ops and each benchmark shape this counts
  * FLOPs (2 per multiply-add; the GEMMs dominate),
  * the fewest bytes the op must move: each input read once, each output written once,
  * the bytes our kernels move (the fused design of the Triton kernels, intermediates such as g = s⊙∂ẏ included),
  * the bytes the unfused reference sequence moves (fastdstn.ops.reference and its autograd backward, one
    launch per PyTorch op, each reading its operands and writing its result once: a lower bound for it),
and turns them into floor times on an H100 SXM: max(FLOPs / 989 TFLOP/s dense bf16, bytes / 3.35 TB/s).

Nothing here is measured; GPU times measured once on an H100 are in benchmarks/history/gpu.md.

    python benchmarks/roofline.py            # rewrites benchmarks/ROOFLINE.md
    python benchmarks/roofline.py --stdout   # prints it instead
"""
from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass, field
from typing import Dict, List, Sequence, Tuple

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from cases import CONV_NAMES, CONV_SHAPES, DROPOUT_SHAPES, LINEAR_SHAPES, LSTM_CELL_SHAPE  # noqa: E402

PEAK_FLOPS = 989e12      # H100 SXM dense bf16 tensor-core FLOP/s
PEAK_BYTES = 3.35e12     # H100 SXM HBM3 bytes/s
ELEMENT = 2              # bf16 storage; accumulation is fp32 in registers
H = 6                    # hyperparameters per layer (SimpleCNN's H; H only touches the thin ε·Vᵀ terms)

# (name, batch, c_in, c_out, size, kernel, padding, first layer: no ẋ), from cases.py's shapes.
CONV_LAYERS = [(name, *shape[:6], not shape[6]) for name, shape in zip(CONV_NAMES, CONV_SHAPES)]


@dataclass
class Launch:
    """One kernel launch: FLOPs, and the named tensors it reads and writes (element counts from `sizes`)."""
    name: str
    flops: float
    reads: Sequence[str]
    writes: Sequence[str]


@dataclass
class Case:
    kernel: str
    shape: str
    sizes: Dict[str, float]
    fused: List[Launch]
    reference: List[Launch]
    inputs: Sequence[str]
    outputs: Sequence[str]
    bytes_per: Dict[str, float] = field(default_factory=dict)

    def nbytes(self, names: Sequence[str]) -> float:
        return sum(self.sizes[n] * self.bytes_per.get(n, ELEMENT) for n in names)

    def launch_bytes(self, launches: List[Launch]) -> float:
        return sum(self.nbytes(l.reads) + self.nbytes(l.writes) for l in launches)

    @property
    def flops(self) -> float:
        return sum(l.flops for l in self.fused)

    @property
    def reference_flops(self) -> float:
        return sum(l.flops for l in self.reference)


def L(name, flops, reads, writes) -> Launch:
    return Launch(name, flops, reads.split(), writes.split())


# --------------------------------------------------------------------------------------------------
# Linear (dual and nonlinear)
# --------------------------------------------------------------------------------------------------

def linear_sizes(B, I, O):
    return dict(x=B * I, xt=B * I, dx=B * I, dxt=B * I, dx_a=B * I, dx_b=B * I,
                eps=B * H, deps=B * H, Wg=O * I, Wr=O * I, dWg=O * I, dWg_a=O * I, dWg_b=O * I, dWr=O * I,
                bg=O, br=O, dbg=O, dbr=O, V=2 * O * H, dV=2 * O * H,
                y=B * O, yt=B * O, u=B * O, s=B * O, t=B * O, a=B * O, b=B * O, c=B * O, dy=B * O, dyt=B * O,
                g=B * O, ds=B * O, dt=B * O, du=B * O, tmp=B * O, st=2 * B * O, dst=2 * B * O, dst1=2 * B * O,
                dst2=2 * B * O)


def linear_dual_forward(B, I, O, with_xt) -> Case:
    gemm = 2 * B * I * O
    epilogue = 2 * B * (2 * O) * H + 5 * B * O
    reads = "x xt Wg Wr bg br eps V" if with_xt else "x Wg Wr bg br eps V"
    fused = [L("_stn_fwd_kernel", (3 if with_xt else 2) * gemm + epilogue, reads, "y yt u")]
    ref = [L("st = eps@V.T", 2 * B * 2 * O * H, "eps V", "st"),
           L("y = x@Wg.T", gemm, "x Wg", "y"),
           L("y = y + bg", B * O, "y bg", "y"),
           L("u = x@Wr.T", gemm, "x Wr", "u"),
           L("yt = s*u", B * O, "s u", "yt")]
    if with_xt:
        ref += [L("a = xt@Wg.T", gemm, "xt Wg", "a"), L("yt = yt + a", B * O, "yt a", "yt")]
    ref += [L("b = t*br", B * O, "t br", "b"), L("yt = yt + b", B * O, "yt b", "yt")]
    name = "stn_linear_dual fwd" + ("" if with_xt else " (first layer, no ẋ)")
    return Case(name, f"B={B} in={I} out={O}", linear_sizes(B, I, O), fused, ref,
                reads.split(), ["y", "yt", "u"])


def linear_dual_response_backward(B, I, O) -> Case:
    """Response sub-step: gradients for ẋ, W_r, b_r, V only (x, W_g, b_g, ε need none)."""
    gemm = 2 * B * I * O
    fused = [L("_stn_bwd_rows_kernel", 2 * B * 2 * O * H * 2 + 4 * B * O, "dyt u eps V br", "g dbr dV"),
             L("_stn_bwd_dx_kernel (∂ẋ)", gemm, "dyt Wg", "dxt"),
             L("_stn_bwd_dw_kernel (∂W_r)", gemm, "g x", "dWr")]
    ref = [L("dt = dyt*br", B * O, "dyt br", "dt"),
           L("tmp = dyt*t", B * O, "dyt t", "tmp"),
           L("dbr = tmp.sum(0)", B * O, "tmp", "dbr"),
           L("dxt = dyt@Wg", gemm, "dyt Wg", "dxt"),
           L("ds = dyt*u", B * O, "dyt u", "ds"),
           L("du = dyt*s", B * O, "dyt s", "du"),
           L("dWr = du.T@x", gemm, "du x", "dWr"),
           L("slice_backward(ds): zeros + copy", 0, "ds", "dst1 ds"),
           L("slice_backward(dt): zeros + copy", 0, "dt", "dst2 dt"),
           L("dst = dst1 + dst2", 2 * B * O, "dst1 dst2", "dst"),
           L("dV = dst.T@eps", 2 * B * 2 * O * H, "dst eps", "dV")]
    return Case("stn_linear_dual bwd, response sub-step", f"B={B} in={I} out={O}", linear_sizes(B, I, O),
                fused, ref, "dyt u eps V br Wg x".split(), "dxt dWr dbr dV".split())


def linear_dual_full_backward(B, I, O) -> Case:
    gemm = 2 * B * I * O
    fused = [L("_stn_bwd_rows_kernel", 2 * B * 2 * O * H * 3 + 6 * B * O, "dy dyt u eps V br", "g dbg dbr dV deps"),
             L("_stn_bwd_dx_kernel (∂x, ∂ẋ)", 3 * gemm, "dy dyt g Wg Wr", "dx dxt"),
             L("_stn_bwd_dw_kernel (∂W_g, ∂W_r)", 3 * gemm, "dy dyt g x xt", "dWg dWr")]
    ref = [L("dbg = dy.sum(0)", B * O, "dy", "dbg"),
           L("dx_a = dy@Wg", gemm, "dy Wg", "dx_a"),
           L("dWg_a = dy.T@x", gemm, "dy x", "dWg_a"),
           L("dt = dyt*br", B * O, "dyt br", "dt"),
           L("tmp = dyt*t", B * O, "dyt t", "tmp"),
           L("dbr = tmp.sum(0)", B * O, "tmp", "dbr"),
           L("dxt = dyt@Wg", gemm, "dyt Wg", "dxt"),
           L("dWg_b = dyt.T@xt", gemm, "dyt xt", "dWg_b"),
           L("dWg = dWg_a + dWg_b", O * I, "dWg_a dWg_b", "dWg"),
           L("ds = dyt*u", B * O, "dyt u", "ds"),
           L("du = dyt*s", B * O, "dyt s", "du"),
           L("dx_b = du@Wr", gemm, "du Wr", "dx_b"),
           L("dWr = du.T@x", gemm, "du x", "dWr"),
           L("dx = dx_a + dx_b", B * I, "dx_a dx_b", "dx"),
           L("slice_backward(ds): zeros + copy", 0, "ds", "dst1 ds"),
           L("slice_backward(dt): zeros + copy", 0, "dt", "dst2 dt"),
           L("dst = dst1 + dst2", 2 * B * O, "dst1 dst2", "dst"),
           L("dV = dst.T@eps", 2 * B * 2 * O * H, "dst eps", "dV"),
           L("deps = dst@V", 2 * B * 2 * O * H, "dst V", "deps")]
    return Case("stn_linear_dual bwd, all gradients", f"B={B} in={I} out={O}", linear_sizes(B, I, O), fused, ref,
                "dy dyt u eps V br Wg Wr x xt".split(), "dx dxt deps dWg dbg dWr dbr dV".split())


def linear_forward(B, I, O) -> Case:
    gemm = 2 * B * I * O
    fused = [L("_stn_fwd_kernel (NONLINEAR)", 2 * gemm + 2 * B * 2 * O * H + 5 * B * O,
               "x Wg Wr bg br eps V", "y u")]
    ref = [L("st = h@V.T", 2 * B * 2 * O * H, "eps V", "st"),
           L("a = x@Wg.T", gemm, "x Wg", "a"),
           L("u = x@Wr.T", gemm, "x Wr", "u"),
           L("c = s*u", B * O, "s u", "c"),
           L("y = a + c", B * O, "a c", "y"),
           L("y = y + bg", B * O, "y bg", "y"),
           L("b = t*br", B * O, "t br", "b"),
           L("y = y + b", B * O, "y b", "y")]
    return Case("stn_linear fwd", f"B={B} in={I} out={O}", linear_sizes(B, I, O), fused, ref,
                "x Wg Wr bg br eps V".split(), ["y", "u"])


def linear_backward(B, I, O) -> Case:
    gemm = 2 * B * I * O
    fused = [L("_stn_bwd_rows_kernel", 2 * B * 2 * O * H * 3 + 6 * B * O, "dy u eps V br", "g dbg dbr dV deps"),
             L("_stn_bwd_dx_kernel (∂x)", 2 * gemm, "dy g Wg Wr", "dx"),
             L("_stn_bwd_dw_kernel (∂W_g, ∂W_r)", 2 * gemm, "dy g x", "dWg dWr")]
    ref = [L("dbg = dy.sum(0)", B * O, "dy", "dbg"),
           L("dt = dy*br", B * O, "dy br", "dt"),
           L("tmp = dy*t", B * O, "dy t", "tmp"),
           L("dbr = tmp.sum(0)", B * O, "tmp", "dbr"),
           L("ds = dy*u", B * O, "dy u", "ds"),
           L("du = dy*s", B * O, "dy s", "du"),
           L("dx_b = du@Wr", gemm, "du Wr", "dx_b"),
           L("dWr = du.T@x", gemm, "du x", "dWr"),
           L("dx_a = dy@Wg", gemm, "dy Wg", "dx_a"),
           L("dWg = dy.T@x", gemm, "dy x", "dWg"),
           L("dx = dx_a + dx_b", B * I, "dx_a dx_b", "dx"),
           L("slice_backward(ds): zeros + copy", 0, "ds", "dst1 ds"),
           L("slice_backward(dt): zeros + copy", 0, "dt", "dst2 dt"),
           L("dst = dst1 + dst2", 2 * B * O, "dst1 dst2", "dst"),
           L("dV = dst.T@h", 2 * B * 2 * O * H, "dst eps", "dV"),
           L("dh = dst@V", 2 * B * 2 * O * H, "dst V", "deps")]
    return Case("stn_linear bwd, all gradients", f"B={B} in={I} out={O}", linear_sizes(B, I, O), fused, ref,
                "dy u eps V br Wg Wr x".split(), "dx deps dWg dbg dWr dbr dV".split())


# --------------------------------------------------------------------------------------------------
# Convolution (dual forward; the response sub-step's backward)
# --------------------------------------------------------------------------------------------------

def conv_dual_forward(name, B, Ci, Co, S, k, p, first) -> Case:
    out = S + 2 * p - k + 1
    X, Y, W = B * Ci * S * S, B * Co * out * out, Co * Ci * k * k
    sizes = dict(x=X, xt=X, y=Y, yt=Y, u=Y, a=Y, c=Y, Wg=W, Wr=W, bg=Co, br=Co, eps=B * H, V=2 * Co * H,
                 st=2 * B * Co, s=B * Co, t=B * Co, tb=B * Co)
    conv = 2 * Y * Ci * k * k
    reads = "x Wg Wr bg br eps V" if first else "x xt Wg Wr bg br eps V"
    fused = [L("_stn_fwd_kernel (CONV)", (2 if first else 3) * conv + 2 * B * 2 * Co * H + 5 * Y, reads, "y yt u")]
    ref = [L("st = eps@V.T", 2 * B * 2 * Co * H, "eps V", "st"),
           L("y = conv(x, Wg, bg)", conv, "x Wg bg", "y"),
           L("u = conv(x, Wr)", conv, "x Wr", "u"),
           L("yt = s[:,:,None,None]*u", Y, "s u", "yt")]
    if not first:
        ref += [L("a = conv(xt, Wg)", conv, "xt Wg", "a"), L("yt = yt + a", Y, "yt a", "yt")]
    ref += [L("tb = t*br", B * Co, "t br", "tb"), L("yt = yt + tb[:,:,None,None]", Y, "yt tb", "yt")]
    shape = f"{name}: B={B} {Ci}→{Co} k{k} p{p} {S}×{S}"
    return Case("stn_conv2d_dual fwd" + (" (first layer, no ẋ)" if first else ""), shape, sizes, fused, ref,
                reads.split(), ["y", "yt", "u"])


def conv_dual_response_backward(name, B, Ci, Co, S, k, p, first) -> Case:
    """Response sub-step: ∂ẋ (unless first layer), ∂W_r, ∂b_r, ∂V. The two convolution gradients run
    ATen/cuDNN in both columns (counted at their ideal bytes); the fused part is the planes kernel."""
    out = S + 2 * p - k + 1
    X, Y, W = B * Ci * S * S, B * Co * out * out, Co * Ci * k * k
    sizes = dict(x=X, dxt=X, dyt=Y, u=Y, g=Y, tmp=Y, da=Y, Wg=W, dWr=W, br=Co, dbr=Co, eps=B * H, V=2 * Co * H,
                 dV=2 * Co * H, ds=B * Co, dtb=B * Co, dt=B * Co, st=2 * B * Co, dst=2 * B * Co, small=B * Co)
    conv = 2 * Y * Ci * k * k
    fused = [L("_conv_bwd_planes_kernel", 3 * Y, "dyt u eps V", "g ds dtb"),
             L("(N, C) products: ∂b_r, ∂V", 4 * B * 2 * Co * H, "ds dtb eps V br", "dbr dV"),
             L("cuDNN: ∂W_r = wgrad(x, g)", conv, "g x", "dWr")]
    ref = [L("dtb = dyt.sum((2, 3))", Y, "dyt", "dtb"),
           L("dt = dtb*br; dbr = (dtb*t).sum(0)", 3 * B * Co, "dtb br st", "dt dbr"),
           L("tmp = dyt*u", Y, "dyt u", "tmp"),
           L("ds = tmp.sum((2, 3))", Y, "tmp", "ds"),
           L("da = dyt*s", Y, "dyt small", "da"),
           L("cuDNN: ∂W_r = wgrad(x, da)", conv, "da x", "dWr"),
           L("dst = cat(ds, dt); dV = dst.T@eps", 2 * B * 2 * Co * H, "ds dt eps", "dst dV")]
    inputs = "dyt u x eps V br".split()
    outputs = "dWr dbr dV".split()
    if not first:
        fused.append(L("cuDNN: ∂ẋ = dgrad(∂ẏ, W_g)", conv, "dyt Wg", "dxt"))
        ref.append(L("cuDNN: ∂ẋ = dgrad(∂ẏ, W_g)", conv, "dyt Wg", "dxt"))
        inputs.append("Wg")
        outputs.append("dxt")
    shape = f"{name}: B={B} {Ci}→{Co} k{k} p{p} {S}×{S}"
    return Case("stn_conv2d_dual bwd, response sub-step" + (" (first layer)" if first else ""), shape, sizes,
                fused, ref, inputs, outputs)


# --------------------------------------------------------------------------------------------------
# Pointwise
# --------------------------------------------------------------------------------------------------

def dropout_forward(label, shape, batch_dim, shared) -> Case:
    n = 1
    for d in shape:
        n *= d
    m = 1
    for i, d in enumerate(shape):
        m *= 1 if i in shared else d
    B = shape[batch_dim]
    sizes = dict(x=n, xt=n, y=n, yt=n, rate=B, uniform=m, keep=m, mask=m, scaled=m, q=B)
    fused = [L("_dropout_dual_kernel", 4 * n, "x xt rate", "y yt")]
    ref = [L("uniform = rand(mask shape)", 0, "", "uniform"),
           L("keep = uniform >= p", m, "uniform rate", "keep"),
           L("mask = keep.to(dtype)", 0, "keep", "mask"),
           L("q = 1 - p", B, "rate", "q"),
           L("mask = mask / q", m, "mask q", "scaled"),
           L("y = x*mask", n, "x scaled", "y"),
           L("yt = xt*mask", n, "xt scaled", "yt")]
    # torch.rand writes fp32 uniforms only in fp32 runs; in bf16 it writes bf16; the compare writes bools.
    return Case("dropout_dual fwd (bwd: the same kernel)", label, sizes, fused, ref, ["x", "xt", "rate"],
                ["y", "yt"], bytes_per=dict(keep=1))


def lstm_forward(B, Hd) -> Case:
    E = B * Hd
    sizes = dict(gates=4 * E, gates_t=4 * E, c=E, c_t=E, h=E, h_t=E, c_new=E, c_new_t=E, e=E)
    # The reference's ops in order (reference.lstm_cell_dual), each reading 1 or 2 E-sized operands and
    # writing one: 4 activations, 5 ops for c' and h', 1 for f·ċ, 5 + 5 + 5 for the three gate tangent
    # terms of ċ', 9 for ḣ'.
    ops = [1] * 4 + [2, 2, 2, 1, 2] + [2] + [1, 2, 2, 2, 2] * 2 + [2, 1, 2, 2, 2] + [1, 2, 2, 2, 2, 1, 2, 2, 2]
    ref = [L(f"pointwise op {i + 1}", E, "e " * r, "e") for i, r in enumerate(ops)]
    fused = [L("_lstm_cell_dual_kernel", 40 * E, "gates gates_t c c_t", "h h_t c_new c_new_t")]
    return Case("lstm_cell_dual fwd (ẋ for gates and c)", f"B={B} hidden={Hd}", sizes, fused, ref,
                "gates gates_t c c_t".split(), "h h_t c_new c_new_t".split())


# --------------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------------

def lstm_backward(B, Hd) -> Case:
    E = B * Hd
    sizes = dict(gates=4 * E, gates_t=4 * E, c=E, c_t=E, dh=E, dh_t=E, dc=E, dc_t=E, dgates=4 * E,
                 dgates_t=4 * E, dcin=E, dcin_t=E, e=E)
    # Autograd through the same 34 reference ops: each op's backward reads the incoming gradient and the
    # r saved operands it needs and writes r gradients (gradient accumulation and the chunk/cat of the
    # gates are not counted: a lower bound).
    ops = [1] * 4 + [2, 2, 2, 1, 2] + [2] + [1, 2, 2, 2, 2] * 2 + [2, 1, 2, 2, 2] + [1, 2, 2, 2, 2, 1, 2, 2, 2]
    ref = [L(f"backward of pointwise op {i + 1}", 2 * r * E, "e " * (1 + r), "e " * r) for i, r in enumerate(ops)]
    fused = [L("_lstm_cell_dual_bwd_kernel", 80 * E, "gates gates_t c c_t dh dh_t dc dc_t",
               "dgates dgates_t dcin dcin_t")]
    return Case("lstm_cell_dual bwd (recomputes the cell)", f"B={B} hidden={Hd}", sizes, fused, ref,
                "gates gates_t c c_t dh dh_t dc dc_t".split(), "dgates dgates_t dcin dcin_t".split())


def cases() -> List[Case]:
    out = []
    for B, I, O in LINEAR_SHAPES:
        out += [linear_dual_forward(B, I, O, True), linear_dual_forward(B, I, O, False),
                linear_dual_response_backward(B, I, O), linear_dual_full_backward(B, I, O),
                linear_forward(B, I, O), linear_backward(B, I, O)]
    out += [conv_dual_forward(*c) for c in CONV_LAYERS]
    out += [conv_dual_response_backward(*c) for c in CONV_LAYERS]
    out += [dropout_forward(*d) for d in DROPOUT_SHAPES]
    out += [lstm_forward(*LSTM_CELL_SHAPE), lstm_backward(*LSTM_CELL_SHAPE)]
    return out


def floor_us(flops: float, nbytes: float) -> Tuple[float, str]:
    t_c, t_m = flops / PEAK_FLOPS, nbytes / PEAK_BYTES
    return max(t_c, t_m) * 1e6, ("compute" if t_c >= t_m else "memory")


def render() -> str:
    mb = 1e6
    lines = [
        "# Roofline floors of the fused Triton kernels (generated)",
        "",
        "Generated by `python benchmarks/roofline.py` from the shapes; do not edit by hand.",
        "",
        f"Model: H100 SXM, {PEAK_FLOPS / 1e12:.0f} TFLOP/s dense bf16 and {PEAK_BYTES / 1e12:.2f} TB/s; "
        f"tensors stored in bf16 ({ELEMENT} bytes), fp32 accumulation in registers; H = {H} hyperparameters "
        "per layer (H only enters the thin ε·Vᵀ terms). Floor = max(FLOPs / peak, bytes / bandwidth).",
        "",
        "* **min bytes**: every input of the op read once and every output written once (for the forward in "
        "training: y, ẏ and u = x·W_rᵀ, which the backward's ∂V needs; see fastdstn/ops/dense/triton.py for why u is "
        "saved rather than recomputed).",
        "* **ours**: bytes the launches of the Triton kernels (`fastdstn/ops/*/triton*.py`) move, intermediates included (g = s⊙∂ẏ in the backward "
        "is written once and read once), assuming each tile of an operand comes from HBM once.",
        "* **reference**: the unfused sequence of `fastdstn.ops.reference` and its autograd backward, one "
        "launch per PyTorch op, each reading its operands and writing its result once: a lower bound on what "
        "that sequence moves (cuBLAS/cuDNN internals and the caching allocator are not counted).",
        "* Nothing on this page is measured. **No GPU was lent to the task that wrote the kernels: there are "
        "no GPU timings here or anywhere in its report.**",
        "",
        "| kernel | shape | GFLOP | FLOP/byte (min) | min MB | ours MB | reference MB | reference launches "
        "| floor µs (min) | floor µs (ours) | floor µs (reference) | reference / ours |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for c in cases():
        min_b = c.nbytes(c.inputs) + c.nbytes(c.outputs)
        ours_b = c.launch_bytes(c.fused)
        ref_b = c.launch_bytes(c.reference)
        f_min, bound = floor_us(c.flops, min_b)
        f_ours, _ = floor_us(c.flops, ours_b)
        f_ref, _ = floor_us(c.reference_flops, ref_b)
        lines.append(f"| {c.kernel} | {c.shape} | {c.flops / 1e9:.3f} | {c.flops / min_b:.0f} | {min_b / mb:.2f} "
                     f"| {ours_b / mb:.2f} | {ref_b / mb:.2f} | {len(c.reference)} | {f_min:.2f} ({bound}) "
                     f"| {f_ours:.2f} | {f_ref:.2f} | {f_ref / f_ours:.2f}x |")
    ridge = PEAK_FLOPS / PEAK_BYTES
    lines += [
        "",
        f"Ridge point: {ridge:.0f} FLOP/byte. Below it an op is memory-bound and fusion's byte savings are its "
        "time savings; above it the GEMMs bound it and fusion saves launches and the elementwise passes.",
        "",
        "The convolution backward's two convolution gradients run ATen/cuDNN in fastdstn/ops/dense/triton_conv.py (not a Triton "
        "kernel); they are counted at their ideal bytes in both columns, so the conv backward rows show only "
        "what the planes kernel saves. Floors ignore per-launch overhead, which grows with the reference's "
        "launch count (its column) and matters most at the small shapes.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stdout", action="store_true", help="print instead of writing ROOFLINE.md")
    args = parser.parse_args()
    text = render()
    if args.stdout:
        print(text)
        return
    path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "ROOFLINE.md")
    with open(path, "w") as f:
        f.write(text)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
