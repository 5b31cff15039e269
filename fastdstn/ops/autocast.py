"""The ops' autocast rules: inside `torch.autocast` an op receives its tensors in one dtype, chosen per op as
torch's own autocast lists choose it for its ops (docs/OPS.md, "Autocast"):

    op                                    computes in          why
    stn_linear(_dual), stn_conv2d(_dual)  the autocast dtype   GEMMs and convolutions, like F.linear/F.conv2d:
                                                               the kernels accumulate the products in float32
    attention_dual, attention             the autocast dtype   like scaled_dot_product_attention: the kernels
                                                               keep the softmax statistics in float32
    lstm_cell_dual                        float32              the cell state is a running sum over the time
                                                               steps (c' = f⊙c + i⊙g): in bf16 every step
                                                               rounds it to 8 significant bits; the op is
                                                               pointwise, so float32 costs bytes, not GEMMs
    dropout_dual                          x's dtype            dtype-preserving like F.dropout; the tangent
                                                               follows its primal (under autocast PyTorch's
                                                               forward AD can hand on a float32 tangent with a
                                                               bf16 primal, e.g. after BatchNorm)
    stn_embedding(_dual)                  (no rule: as given)  a gather, like F.embedding
    penalty_row_sums,                     (no rule: as given)  passes over the weights, which autocast
    penalty_row_combination                                    leaves in their own dtype
    max_pool2d_dual(_backward)            (no rule: as given)  a selection, like F.max_pool2d

As in torch, only floating tensors on the autocast device (the first argument's) other than float64 are cast,
and a per-example drop probability (`rate`) is never cast: it is compared against uniform draws, and bf16
would move it (0.1 becomes 0.10009765625).

The one table serves two doors: `cast`, which the public functions (fastdstn.ops.*) call before checking
their arguments and picking a backend (the reference backend is plain PyTorch, not an operator), and the
Autocast kernels `register` puts on the operators of the compiled and Triton backends (fastdstn::<op>,
fastdstn::<op>_triton) for whoever calls them directly, traced graphs included; fastdstn.ops registers them
when it is imported. A kernel may be registered before its operator is defined, so the Triton ops (defined
when their module is first imported) need no import here.
"""
from __future__ import annotations

from typing import Dict, Optional, Tuple

import torch

Tensor = torch.Tensor

AUTOCAST = "autocast dtype"
FLOAT32 = "float32"
FIRST = "the first argument's dtype"
RULES: Dict[str, str] = {
    "stn_linear": AUTOCAST, "stn_linear_dual": AUTOCAST, "stn_conv2d": AUTOCAST, "stn_conv2d_dual": AUTOCAST,
    "attention_dual": AUTOCAST, "attention": AUTOCAST,
    "lstm_cell_dual": FLOAT32,
    "dropout_dual": FIRST,
}
NEVER_CAST = ("rate",)  # argument names of the operators' schemas
DEVICE_TYPES = ("cpu", "cuda")


def _eligible(t, device_type: str) -> bool:
    return (isinstance(t, Tensor) and t.is_floating_point() and t.dtype != torch.float64
            and t.device.type == device_type)


def target_dtype(op: str, first: Tensor) -> Optional[torch.dtype]:
    """The dtype `op` computes in when `first` is its first argument, under the autocast state of first's
    device; None when autocast is off there, the op has no rule, or `first` is not cast (e.g. float64)."""
    rule = RULES.get(op)
    if rule is None or not torch._C._is_any_autocast_enabled():
        return None
    device_type = first.device.type
    if not torch.is_autocast_enabled(device_type) or not _eligible(first, device_type):
        return None
    if rule == AUTOCAST:
        return torch.get_autocast_dtype(device_type)
    return torch.float32 if rule == FLOAT32 else first.dtype


def dtype_for(op: str, first: Tensor) -> torch.dtype:
    """The dtype `op` computes in when `first` is its first argument: its rule's (`target_dtype`) or first's."""
    return target_dtype(op, first) or first.dtype


def _cast(t, dtype: torch.dtype, device_type: str):
    return t.to(dtype) if _eligible(t, device_type) and t.dtype != dtype else t


def cast(op: str, *tensors: Optional[Tensor]) -> Tuple[Optional[Tensor], ...]:
    """`tensors` (None passes; the first is a tensor) in the dtype `op` computes in (`target_dtype`): unchanged
    outside autocast or for an op without a rule. The casts are differentiable (autograd records a `.to`)."""
    # Outside autocast, as on nearly every call, one check of the thread's state: 1.55 µs a call with 8 tensors
    # (a no-op function: 0.60 µs) against 4.2 µs when it read the first tensor's device and asked autocast of that
    # device type (timeit, 300k calls, 1 thread on this shared 2-core machine).
    if not torch._C._is_any_autocast_enabled():
        return tensors
    first = tensors[0]
    dtype = target_dtype(op, first) if isinstance(first, Tensor) else None
    if dtype is None:
        return tensors
    return tuple(_cast(t, dtype, first.device.type) for t in tensors)


def _kernel(name: str, device_type: str):
    """The Autocast kernel of fastdstn::<name> for `device_type`: casts the operator's tensor arguments by the
    rule of its op, except those in NEVER_CAST, then runs the operator below the Autocast key."""
    key = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, "Autocast" + torch._C._dispatch_key_for_device(
        device_type)))
    op = name[:-len("_triton")] if name.endswith("_triton") else name
    bound = {}  # the overload and which arguments may be cast, looked up at the first call (after the op exists)

    def kernel(_keyset, *args, **kwargs):
        if not bound:
            overload = getattr(torch.ops.fastdstn, name).default
            bound["op"] = overload
            bound["castable"] = [a.name not in NEVER_CAST for a in overload._schema.arguments]
        dtype = target_dtype(op, args[0])
        if dtype is not None:
            args = [_cast(a, dtype, device_type) if castable else a for a, castable in zip(args, bound["castable"])]
            kwargs = {k: v if k in NEVER_CAST else _cast(v, dtype, device_type) for k, v in kwargs.items()}
        with torch._C._ExcludeDispatchKeyGuard(key):
            return bound["op"](*args, **kwargs)
    return kernel


_library: Optional[torch.library.Library] = None


def register() -> None:
    """Puts the Autocast kernels (CPU and CUDA) on every operator that runs an op of RULES; once."""
    from .dispatch import operator_names  # dispatch imports dtype_for from here: no import above

    global _library
    if _library is not None:
        return
    _library = torch.library.Library("fastdstn", "IMPL")
    for op in RULES:
        for name in operator_names(op):
            for device_type in DEVICE_TYPES:
                key = "Autocast" + torch._C._dispatch_key_for_device(device_type)
                _library.impl(name, _kernel(name, device_type), key, with_keyset=True)
