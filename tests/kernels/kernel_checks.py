"""Shared helpers for the Triton kernel tests.

Tolerances are derived, not guessed (flash-attention's rule): a kernel's error against a float64
reference may be at most twice PyTorch's own error in the kernel's dtype on the same inputs, plus a floor
of a few ulps of the result's magnitude (PyTorch's error can be 0 by luck on tiny reductions).
"""
import torch

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"
# Under the interpreter wrap_triton launches eagerly instead of tracing, so opcheck's AOT-dispatch test
# (which compares a traced graph against eager) only means something on a GPU.
OPCHECK_UTILS = (("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
                 if DEVICE == "cuda" else ("test_schema", "test_autograd_registration", "test_faketensor"))


def _flat(values):
    if isinstance(values, torch.Tensor) or values is None:
        return [values]
    out = []
    for v in values:
        out.extend(_flat(v))
    return out


def assert_matches(name, got, ref32, ref64, floor_ulps=64.0, dtype=torch.float32):
    """got/ref32/ref64: tensors or (nested) sequences of tensors/None, compared pairwise. ref32 is PyTorch's
    computation in the kernel's dtype (float32 unless `dtype` says otherwise), ref64 the float64 truth."""
    for i, (g, r32, r64) in enumerate(zip(_flat(got), _flat(ref32), _flat(ref64))):
        if r64 is None:
            # The reference leaves an unused parameter's gradient None; a fused backward may return zeros.
            assert g is None or not g.detach().abs().max().item(), f"{name}[{i}]: expected None or zeros"
            continue
        assert g is not None, f"{name}[{i}]: expected a tensor, received None"
        assert g.shape == r64.shape, f"{name}[{i}]: shape {tuple(g.shape)} != {tuple(r64.shape)}"
        g, r32, r64 = g.detach().double().cpu(), r32.detach().double().cpu(), r64.detach().double().cpu()
        torch_err = (r32 - r64).abs().max().item() if r64.numel() else 0.0
        err = (g - r64).abs().max().item() if r64.numel() else 0.0
        scale = r64.abs().max().item() if r64.numel() else 0.0
        tol = 2 * torch_err + floor_ulps * torch.finfo(dtype).eps * max(scale, 1.0)
        print(f"{name}[{i}]: max |err| {err:.3g} (torch fp32 {torch_err:.3g}, tol {tol:.3g}, scale {scale:.3g})")
        assert err <= tol, f"{name}[{i}]: max |err| {err:.3g} > tol {tol:.3g} (torch fp32 error {torch_err:.3g})"


def make(shape, requires_grad=True, dtype=torch.float32):
    return torch.randn(shape, device=DEVICE, dtype=dtype).requires_grad_(requires_grad)


def to64(tensors):
    return [None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors]


def grads(outputs, cotangents, inputs):
    """d(Σ outputs·cotangents)/d(inputs), None for inputs that do not require grad."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o is not None]
    loss = sum((o * c.to(o.dtype)).sum() for o, c in pairs)
    wanted = [t for t in inputs if t is not None and t.requires_grad]
    got = iter(torch.autograd.grad(loss, wanted, allow_unused=True))
    return [next(got) if (t is not None and t.requires_grad) else None for t in inputs]
