"""dual_routes() hands fastdstn's own layers over as one call each (one_call): the mode intercepts the layer, not
each tensor call of its checks, while the layer's numbers stay those of a call outside the mode."""
import torch
import torch.autograd.forward_ad as fwAD
from torch.overrides import TorchFunctionMode

from fastdstn import feeding
from fastdstn.nn import StnDropout, StnLinear, dual_routes


class _Counting(TorchFunctionMode):
    def __init__(self):
        super().__init__()
        self.names = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        self.names.append(getattr(func, "__qualname__", str(func)))
        return func(*args, **(kwargs or {}))


def _dual_forward(model, x, h, values, routes):
    torch.manual_seed(0)
    with fwAD.dual_level(), feeding(h, dual=True, values=values), routes():
        return fwAD.unpack_dual(model(x))


def test_own_layers_are_one_call_of_the_mode_and_compute_the_same():
    model = torch.nn.Sequential(StnLinear(6, 5, num_hypers=2), StnDropout("drop"), StnLinear(5, 3, num_hypers=2))
    with torch.no_grad():
        for layer in (model[0], model[2]):
            layer.hyper_proj.normal_()
    x, h = torch.randn(4, 6), torch.randn(4, 2)
    values = {"drop": torch.full((4,), 0.3)}
    counting = _Counting()
    routed = _dual_forward(model, x, h, values, dual_routes)
    with counting:      # the same forward outside dual_routes(), under a mode that records every call
        plain = _dual_forward(model, x, h, values, torch.no_grad)
    assert len(counting.names) > 30, "outside dual_routes() a mode sees each call of the layers' bodies"
    for a, b in zip(routed, plain):
        torch.testing.assert_close(a, b, rtol=0, atol=0)

    spy = _Counting()   # a user's mode around the dual pass sees each of fastdstn's layers as one call
    with spy:
        _dual_forward(model, x, h, values, dual_routes)
    assert [n for n in spy.names if n.endswith(".forward")] == ["StnLinear.forward", "StnDropout.forward",
                                                               "StnLinear.forward"]
    assert len(spy.names) < 10, spy.names
