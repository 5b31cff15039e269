"""SelfTuning takes batches as a tensor, a tuple of positional arguments or a dict of keyword arguments, counts the
examples in the first (or a named) tensor, and refuses a wrong optimizer object and a hyper step before training."""
import subprocess
import sys
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from fastdstn import Hyper, HyperSpace, SelfTuning, convert, make_optimizers

BATCH = 4


class TwoInputs(nn.Module):
    """model(x, mask) and model(x=..., mask=...): features of the unmasked positions, averaged."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Dropout(0.1), nn.Linear(8, 3))

    def forward(self, x, mask):
        return (self.body(x) * mask.unsqueeze(-1)).sum(1) / mask.sum(1, keepdim=True)


def two_input_method(mode="delta", **options):
    space = HyperSpace([Hyper("drop", 0.2, 0.0, 0.9)])
    model = convert(TwoInputs(), space, dropout={"body.2": "drop"})
    return SelfTuning(model, space, mode, loss_fn=F.cross_entropy, **options), make_optimizers(model, space, mode)


def batch():
    x, mask = torch.randn(BATCH, 6, 5), (torch.rand(BATCH, 6) > 0.3).float()
    mask[:, 0] = 1
    return x, mask, torch.arange(BATCH) % 3


@pytest.mark.parametrize("mode", ["delta", "centered", "stn"])
def test_tuple_and_dict_batches_train_and_predict_as_positional_and_keyword_arguments(mode):
    method, optimizers = two_input_method(mode)
    x, mask, y = batch()
    lam = method.space.lam.detach().clone()
    for inputs in ((x, mask), {"x": x, "mask": mask}):
        losses = method.train_step(inputs, y, optimizers)
        assert torch.isfinite(losses["train_loss"])
        assert torch.isfinite(method.hyper_step(inputs, y, optimizers.hyper)["val_loss"])
    assert not torch.equal(method.space.lam.detach(), lam)
    torch.testing.assert_close(method.predict({"mask": mask, "x": x}), method.predict((x, mask)))


def test_the_example_count_comes_from_the_named_tensor():
    method, optimizers = two_input_method(batch_key="x")
    x, mask, y = batch()
    method.train_step({"mask": mask[:1].expand(BATCH, -1), "x": x}, y, optimizers)
    assert method._examples({"mask": mask[:1], "x": x}) == BATCH
    bad, _ = two_input_method(batch_key="tokens")
    with pytest.raises(KeyError, match=r"batch_key: 'tokens' is not among the inputs' keys \['x', 'mask'\]"):
        bad.train_step({"x": x, "mask": mask}, y, optimizers)


def test_inputs_of_another_kind_or_without_a_tensor_are_refused_in_one_line():
    method, optimizers = two_input_method()
    _, _, y = batch()
    with pytest.raises(TypeError, match=r"inputs: expected a tensor, a tuple of positional arguments or a dict of "
                                        r"keyword arguments, received str"):
        method.train_step("x", y, optimizers)
    with pytest.raises(ValueError, match=r"inputs: a dict with no tensor in it"):
        method.train_step({"x": 1.0}, y, optimizers)


def test_a_wrong_optimizer_object_is_named():
    method, optimizers = two_input_method()
    x, mask, y = batch()
    with pytest.raises(TypeError, match=r"optimizers: expected the fastdstn.Optimizers that make_optimizers"
                                        r"\(model, space, mode\) returns, received SGD"):
        method.train_step((x, mask), y, optimizers.general)
    method.train_step((x, mask), y, optimizers)
    with pytest.raises(TypeError, match=r"optimizer: expected the optimizer of λ and ρ, optimizers.hyper, "
                                        r"received the whole fastdstn.Optimizers"):
        method.hyper_step((x, mask), y, optimizers)
    with pytest.raises(ValueError, match=r"optimizer: .* does not update space.lam"):
        method.hyper_step((x, mask), y, optimizers.general)
    with pytest.raises(TypeError, match=r"optimizer: expected a torch optimizer of λ and ρ \(optimizers.hyper\), "
                                        r"received dict"):
        method.hyper_step((x, mask), y, {})


def test_a_hyper_step_before_any_training_step_is_warned_about_once():
    method, optimizers = two_input_method()
    x, mask, y = batch()
    with pytest.warns(UserWarning, match=r"hyper_step: called before any train_step; every hyper projection V is "
                                         r"still 0, so the validation loss does not depend on λ"):
        method.hyper_step((x, mask), y, optimizers.hyper)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.hyper_step((x, mask), y, optimizers.hyper)
        trained, optimizers = two_input_method()
        trained.train_step((x, mask), y, optimizers)
        trained.hyper_step((x, mask), y, optimizers.hyper)


def test_a_hugging_face_model_trains_on_dict_batches_with_an_attention_mask():
    transformers = pytest.importorskip("transformers")
    config = transformers.GPT2Config(vocab_size=20, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    space = HyperSpace([Hyper("attn", 0.1, 0.0, 0.9)])
    model = convert(transformers.GPT2LMHeadModel(config), space, dropout={"transformer.h.0.attn": "attn"})
    ids = torch.randint(0, 20, (BATCH, 8))
    attention_mask = torch.ones(BATCH, 8, dtype=torch.long)
    attention_mask[1, 5:] = 0
    inputs = {"input_ids": ids, "attention_mask": attention_mask}
    lm_loss = lambda out, y: F.cross_entropy(out.logits.flatten(0, 1), y.flatten())  # noqa: E731
    for mode in ("delta", "stn"):
        method = SelfTuning(model, space, mode, loss_fn=lm_loss, linearized_hyper=mode == "delta")
        optimizers = make_optimizers(model, space, mode)
        for _ in range(2):
            losses = method.train_step(inputs, ids, optimizers)
            assert all(torch.isfinite(v) for v in losses.values())
            assert torch.isfinite(method.hyper_step(inputs, ids, optimizers.hyper)["val_loss"])
        assert method.predict(inputs).logits.shape == (BATCH, 8, 20)


def test_a_delta_stn_step_in_a_new_process_prints_no_torch_jit_script_warning():
    """torch's forward-AD decompositions warn that torch.jit.script is deprecated when they load (the first
    make_dual); fastdstn loads them quietly before its first dual pass."""
    script = ("import torch, torch.nn.functional as F, fastdstn\n"
              "space = fastdstn.HyperSpace([fastdstn.Hyper('p', 0.2, 0.0, 0.9)])\n"
              "model = fastdstn.convert(torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Dropout(), "
              "torch.nn.Linear(4, 2)), space, dropout={'1': 'p'})\n"
              "method = fastdstn.SelfTuning(model, space, 'delta', loss_fn=F.cross_entropy)\n"
              "method.train_step(torch.randn(4, 3), torch.arange(4) % 2, fastdstn.make_optimizers(model, space, "
              "'delta'))\n")
    result = subprocess.run([sys.executable, "-W", "error::FutureWarning", "-c", script], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
