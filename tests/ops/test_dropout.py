"""dropout_dual on every backend, one set of tests parametrised over backend and device (op_cases.backends):
per-example rates, one mask on primal and tangent, shared dims, seeds, the backward's mask, gradcheck and
opcheck."""
import pytest
import torch

from fastdstn.ops import reference as ref

from op_cases import backends, grads, tensors

RATES = [0.0, 0.1, 0.25, 0.5, 0.75, 0.9]


def applied_mask(y, x):
    """The mask that was applied: y / x (x has no zeros in these tests)."""
    return (y / x).detach()


@pytest.mark.parametrize("backend", backends())
def test_dropout_rates_per_example_and_one_mask_on_the_tangent(backend):
    B, D = len(RATES), 20000
    rate = torch.tensor(RATES, device=backend.device)
    x = torch.ones(B, D, device=backend.device)
    xt = tensors(dict(xt=(B, D)), device=backend.device, grads=set())[0]
    y, yt = backend.dropout_dual(x, xt, rate, 42, 0, ())
    kept = (y != 0).float().mean(1)
    for i, p in enumerate(RATES):
        sd = (p * (1 - p) / D) ** 0.5
        assert abs(kept[i].item() - (1 - p)) <= 5 * sd + 1e-9, (i, kept[i].item(), p)
        torch.testing.assert_close(y[i][y[i] != 0], torch.full_like(y[i][y[i] != 0], 1 / (1 - p)))
    torch.testing.assert_close(kept, 1 - rate, atol=0.015, rtol=0)
    assert kept[0].item() == 1.0, "rate 0 keeps everything"
    torch.testing.assert_close(y.mean(1), torch.ones(B, device=backend.device), atol=0.05, rtol=0)  # unbiased
    torch.testing.assert_close(yt, xt * y)  # the tangent sees the primal's mask
    # deterministic in the seed, different across seeds; no tangent without ẋ
    again, none = backend.dropout_dual(x, None, rate, 42, 0, ())
    assert torch.equal(again, y) and none is None
    assert not torch.equal(backend.dropout_dual(x, None, rate, 43, 0, ())[0], y)


@pytest.mark.parametrize("shape,batch_dim,shared", [
    ((3, 4, 5, 6), 0, (2, 3)),     # channel dropout of images
    ((8, 16, 5, 5), 0, (2, 3)),
    ((4, 6, 5, 7), 0, (2, 3)),
    ((7, 3, 4), 1, (0,)),          # locked dropout of (T, B, D)
    ((9, 4, 33), 1, (0,)),
    ((3, 5, 2, 4, 6), 0, (1, 3)),  # five dims, two shared groups
])
@pytest.mark.parametrize("backend", backends())
def test_dropout_shared_dims_share_one_draw_and_the_backward_its_mask(backend, shape, batch_dim, shared):
    x, xt = tensors(dict(x=shape, xt=shape), device=backend.device)
    rate = torch.rand(shape[batch_dim], device=backend.device) * 0.6
    y, yt = backend.dropout_dual(x, xt, rate, 99, batch_dim, shared)
    m = applied_mask(y, x)
    torch.testing.assert_close(m, applied_mask(yt, xt))
    for d in shared:
        # y / x recovers the scale up to rounding: compare with a tolerance, and the zero pattern exactly.
        first = m.narrow(d, 0, 1).expand_as(m)
        torch.testing.assert_close(m, first, msg=f"mask varies along shared dim {d}")
        assert torch.equal(m == 0, first == 0)
    view = [1] * len(shape)
    view[batch_dim] = -1
    scale = (1 / (1 - rate)).reshape(view).expand_as(m)
    torch.testing.assert_close(m[m != 0], scale[m != 0])
    gy, gyt = tensors(dict(gy=shape, gyt=shape), device=backend.device, grads=set(), seed=1)
    gx, gxt = grads([y, yt], [gy, gyt], [x, xt])
    torch.testing.assert_close(gx, gy * m)
    torch.testing.assert_close(gxt, gyt * m)


@pytest.mark.parametrize("shape,shared,squeezed", [
    ((6, 5, 4, 3), (2, 3), (6, 5)),          # channel dropout: the trailing H·W share one draw
    ((6, 5, 4, 3), (1, 3), (6, 4)),          # a shared dim inside and one at the end
    ((5, 2, 3, 4, 7), (2, 4), (5, 2, 4)),
])
@pytest.mark.parametrize("backend", backends("reference", "cpp"))  # Triton numbers its (example, kept) layout
def test_dropout_shared_dims_draw_the_mask_of_the_tensor_without_them(backend, shape, shared, squeezed):
    """A shared dim takes no part in the mask: the mask of x equals the mask of x with its shared dims removed,
    broadcast back (the compiled loop draws a run of trailing shared dims once, the other rows per element)."""
    x = torch.ones(shape, device=backend.device)
    rate = torch.rand(shape[0], device=backend.device) * 0.8
    y, _ = backend.dropout_dual(x, None, rate, 5, 0, shared)
    z, _ = backend.dropout_dual(torch.ones(squeezed, device=backend.device), None, rate, 5, 0, ())
    kept = [1 if d in shared else n for d, n in enumerate(shape)]
    assert torch.equal(y, z.reshape(kept).expand(shape))


@pytest.mark.parametrize("with_xt", [True, False])
@pytest.mark.parametrize("backend", backends())
def test_dropout_seed_determines_the_mask_and_the_backward_reuses_it(backend, with_xt):
    x, xt = tensors(dict(x=(5, 70), xt=(5, 70) if with_xt else None), device=backend.device)
    rate = (torch.rand(5, device=backend.device) * 0.8).requires_grad_(True)
    y, yt = backend.dropout_dual(x, xt, rate, 11, 0, ())
    torch.testing.assert_close(backend.dropout_dual(x, xt, rate, 11, 0, ())[0], y)
    m = applied_mask(y, x)
    cy, cyt = tensors(dict(cy=(5, 70), cyt=(5, 70)), device=backend.device, grads=set(), seed=1)
    g = grads([y, yt], [cy, cyt], [x, xt, rate])
    torch.testing.assert_close(g[0], cy * m)
    if with_xt:
        torch.testing.assert_close(g[1], cyt * m)
    if backend.name == "triton":   # the others differentiate the keep scale 1/(1 − p) as well
        assert g[2] is None, "rates are detached (docs/METHOD.md §2)"


def gradcheck_inputs(device):
    """float64 x and ẋ of shape (4, 3, 5) that require grad, and one rate per example."""
    x, xt = tensors(dict(x=(4, 3, 5), xt=(4, 3, 5)), dtype=torch.float64, device=device)
    return x, xt, torch.tensor([0.0, 0.3, 0.6, 0.9], dtype=torch.float64, device=device)


@pytest.mark.parametrize("backend", backends())
def test_dropout_gradcheck(backend):
    x, xt, rate = gradcheck_inputs(backend.device)
    fn = lambda a, b: backend.dropout_dual(a, b, rate, 7, 0, (2,))  # noqa: E731
    if backend.name == "triton":
        # The kernel scales in float32 (a float64 step of 1e-6 moved its output by 7% of the slope), so the
        # analytical backward is compared with finite differences at float32-level tolerances.
        assert torch.autograd.gradcheck(fn, (x, xt), eps=1e-3, atol=1e-3, rtol=1e-3)
    else:
        assert torch.autograd.gradcheck(fn, (x, xt))


@pytest.mark.parametrize("backend", backends("reference", "cpp"))
def test_dropout_double_backward_is_its_forward(backend):
    """The backward is the same masked product (the Triton backward is an op without a derivative)."""
    x, xt, rate = gradcheck_inputs(backend.device)
    assert torch.autograd.gradgradcheck(lambda a, b: backend.dropout_dual(a, b, rate, 7, 0, (2,)), (x, xt))


@pytest.mark.parametrize("shape,batch_dim,shared,has_xt", [((6, 5), 0, [], True), ((3, 4, 5, 2), 0, [2, 3], True),
                                                          ((7, 4, 3), 1, [0], False), ((3, 10), 0, [], True),
                                                          ((3, 10), 0, [], False)])
@pytest.mark.parametrize("backend", backends("cpp", "triton"))
def test_dropout_opcheck(backend, shape, batch_dim, shared, has_xt):
    x, xt = tensors(dict(x=shape, xt=shape if has_xt else None), device=backend.device)
    rate = torch.rand(shape[batch_dim], device=backend.device) * 0.9
    torch.library.opcheck(backend.registered("dropout_dual"), (x, xt, rate, 1234, batch_dim, shared),
                          test_utils=backend.opcheck_utils)


@pytest.mark.parametrize("backend", backends("triton"))
def test_dropout_unmergeable_shared_dims_run_the_reference(backend):
    """Three shared groups do not merge into the kernel's (example, shared, kept) layout."""
    (x,) = tensors(dict(x=(2, 3, 4, 5, 6, 7)), device=backend.device)
    rate = torch.full((2,), 0.3, device=backend.device)
    y, _ = backend.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))
    torch.testing.assert_close(y, ref.dropout_dual(x, None, rate, 3, 0, (1, 3, 5))[0])
