"""The docs/METHOD.md §8 networks: each builds from fastdstn.nn layers, runs a Δ-STN training step and a hyper step
with its tuned augmentation, and has the hyperparameters the experiments tune."""
import pytest
import torch

import fastdstn
from fastdstn import models
from fastdstn.data import Augmenter
from fastdstn.nn import StnConv2d, StnLinear, response_parameters
from fastdstn.train import Trainer
from fastdstn.train.building import loss_function

from tiny_runs import tiny_config

CIFAR_MEAN, CIFAR_STD = (0.49, 0.48, 0.45), (0.25, 0.24, 0.26)


def one_round(built, inputs, targets):
    space = fastdstn.HyperSpace(built.hypers)
    augment = Augmenter(built.augment, mean=CIFAR_MEAN[:inputs.shape[1]], std=CIFAR_STD[:inputs.shape[1]]) \
        if built.augment else None
    method = fastdstn.SelfTuning(built.model, space, "delta", loss_fn=loss_function(built.task), augment=augment,
                                 weight_decay=built.weight_decay, batch_dim=built.batch_dim, penalty=built.penalty)
    optimizers = fastdstn.make_optimizers(built.model, space, "delta")
    losses = method.train_step(inputs, targets, optimizers)
    hyper = method.hyper_step(inputs, targets, optimizers.hyper)
    assert all(torch.isfinite(v) for v in [*losses.values(), *hyper.values()])
    return method


def test_simple_cnn_is_the_spec_network():
    built = models.build("simple-cnn")
    net = built.model
    assert [h.name for h in built.hypers] == ["dropout_in", "dropout_conv1", "dropout_conv2", "dropout_fc",
                                              "cutout_length", "cutout_holes"]
    length, holes = built.hypers[4], built.hypers[5]
    assert (length.low, length.high, length.discrete) == (2.0, 24.0, True)
    assert (holes.low, holes.high, holes.discrete) == (0.0, 5.0, True)
    assert isinstance(net.conv1, StnConv2d) and net.conv1.weight.shape == (16, 1, 5, 5) and net.conv1.padding == (2, 2)
    assert net.conv2.weight.shape == (32, 16, 5, 5)
    assert isinstance(net.fc1, StnLinear) and net.fc1.weight.shape == (1568, 1568) and net.fc2.weight.shape == (10, 1568)
    method = one_round(built, torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    assert method.predict(torch.randn(3, 1, 28, 28)).shape == (3, 10)


def test_mlp_and_linear_regression():
    built = models.build("mlp")
    assert [h.name for h in built.hypers] == ["dropout_in", "dropout_h1", "dropout_h2"]
    assert [m.weight.shape for m in built.model.modules() if isinstance(m, StnLinear)] == \
        [(1200, 784), (1200, 1200), (10, 1200)]
    one_round(built, torch.randn(4, 1, 28, 28), torch.randint(0, 10, (4,)))
    reg = models.build("linear", in_features=8)
    wd = {h.name: h for h in reg.hypers}["weight_decay"]
    assert reg.weight_decay == "weight_decay" and not wd.per_example and reg.task == "regression"
    one_round(reg, torch.randn(4, 8), torch.randn(4, 1))


# A Δ-STN round on these costs seconds on 2 cores (the optimizer steps over 7–15 M weights twice), so the
# full round runs on AlexNet; VGG16 and ResNet18 (8×8 inputs: it pools adaptively) check predict only.
@pytest.mark.parametrize("name, count, side, full", [("alexnet", 18, 32, True), ("vgg16", 26, 32, False),
                                                     ("resnet18", 15, 8, False)])
def test_cifar_networks(name, count, side, full):
    built = models.build(name)
    assert len(built.hypers) == count
    assert {"hflip", "cutout_length", "brightness", "degrees", "hue"} <= set(built.augment)
    assert built.augment["hflip"] == 0.5 and "hflip" not in {h.name for h in built.hypers}
    assert response_parameters(built.model)
    if full:
        method = one_round(built, torch.randn(2, 3, side, side), torch.randint(0, 10, (2,)))
    else:
        method = fastdstn.SelfTuning(built.model, fastdstn.HyperSpace(built.hypers), "delta",
                                     loss_fn=loss_function(built.task))
    assert method.predict(torch.randn(2, 3, side, side)).shape == (2, 10)


def test_cifar_augmentation_starts_where_the_authors_do():
    starts = {h.name: (h.init, h.high, h.scale, h.per_example) for h in models.build("alexnet").hypers}
    for name in ("brightness", "contrast", "saturation", "translate", "scale"):
        assert starts[name][0] == 0.05
    assert starts["hue"][:2] == (0.05, 0.5)
    assert starts["degrees"][:2] == starts["shear"][:2] == (5.0, 45.0)
    assert starts["dropout_in"][:2] == (0.05, 0.95)
    assert all(scale == 1.0 and per_example for _, _, scale, per_example in starts.values())


def test_alexnet_is_the_authors_network():
    built = models.build("alexnet")
    net = built.model
    assert [h.name for h in built.hypers[:8]] == ["dropout_in", *(f"dropout_conv{i}" for i in range(1, 6)),
                                                  "dropout_fc1", "dropout_fc2"]
    convs = [m for m in net.modules() if isinstance(m, StnConv2d)]
    assert [tuple(c.weight.shape) for c in convs] == [(64, 3, 3, 3), (192, 64, 3, 3), (384, 192, 3, 3),
                                                      (256, 384, 3, 3), (256, 256, 3, 3)]
    assert [c.stride for c in convs] == [(2, 2)] + [(1, 1)] * 4 and all(c.padding == (1, 1) for c in convs)
    assert net.features(torch.randn(2, 3, 32, 32)).shape == (2, 256, 2, 2)
    assert [tuple(m.weight.shape) for m in net.classifier if isinstance(m, StnLinear)] == \
        [(4096, 1024), (4096, 4096), (10, 4096)]
    # dropout sites: the input's channels, after each conv block (after its pool), after fc1 and fc2
    kinds = [type(m).__name__ for m in (*net.features, *net.classifier)]
    assert kinds == ["StnDropout2d", "StnConv2d", "ReLU", "MaxPool2d", "StnDropout2d",
                     "StnConv2d", "ReLU", "MaxPool2d", "StnDropout2d", "StnConv2d", "ReLU", "StnDropout2d",
                     "StnConv2d", "ReLU", "StnDropout2d", "StnConv2d", "ReLU", "MaxPool2d", "StnDropout2d",
                     "StnLinear", "ReLU", "StnDropout", "StnLinear", "ReLU", "StnDropout", "StnLinear"]


def test_vgg16_convs_start_he_normal_with_the_authors_biases():
    torch.manual_seed(0)
    convs = [m for m in models.build("vgg16").model.modules() if isinstance(m, StnConv2d)]
    assert len(convs) == 13
    for conv in convs:
        std = (2 / (9 * conv.out_channels)) ** 0.5
        for weight in (conv.weight, conv.response_weight):
            assert weight.mean().abs() < 0.1 * std and abs(weight.std() / std - 1) < 0.05
        assert torch.equal(conv.bias, torch.zeros_like(conv.bias))
        assert torch.equal(conv.response_bias, torch.full_like(conv.response_bias, 1e-3))


def test_vgg16_has_no_batchnorm_and_resnet18_is_torchvisions():
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in models.build("vgg16").model.modules())
    resnet = models.build("resnet18").model
    assert type(resnet).__name__ == "ResNet" and isinstance(resnet.layer1[0][0].conv1, StnConv2d)


def test_language_model_ties_and_carries_its_state():
    built = models.build("lstm", vocab=30, size=8)
    lm = built.model
    assert lm.decoder.weight is lm.encoder.weight and built.task == "language" and built.batch_dim == 1
    tokens = torch.randint(0, 30, (5, 3))
    one_round(built, tokens, torch.randint(0, 30, (5, 3)))
    lm.eval()
    with lm.streaming("valid"):
        lm.reset_state("valid")
        first = lm(tokens)
        carried = lm(tokens)               # starts from the state the first call left
        lm.reset_state("valid")
        fresh = lm(tokens)
    assert torch.equal(first, fresh) and not torch.equal(first, carried)


def test_language_model_adds_ar_and_tar_to_the_training_loss_only():
    built = models.build("lstm", vocab=30, size=8)
    lm, space = built.model, fastdstn.HyperSpace(built.hypers)
    assert {"ar", "tar"} <= set(space.names)
    tokens = torch.randint(0, 30, (6, 4))
    values = space.current_values(4)
    values["ar"] = torch.tensor([0.0, 1.0, 2.0, 3.0])
    values["tar"] = torch.tensor([0.5, 0.0, 1.5, 4.0])
    lm.train()
    lm.drop_out.register_forward_hook(lambda m, i, o: captured.update(dropped=o))
    lm.lstm.register_forward_hook(lambda m, i, o: captured.update(out=o[0]))
    captured = {}
    with fastdstn.feeding(None, values=values):
        lm(tokens)
    out, dropped = captured["out"], captured["dropped"]
    expected = (values["ar"] * dropped.pow(2).mean(dim=(0, 2))
                + values["tar"] * (out[1:] - out[:-1]).pow(2).mean(dim=(0, 2))).mean()
    torch.testing.assert_close(lm.activation_penalty(), expected)
    assert lm.activation_penalty() is None                       # read once
    with fastdstn.feeding(torch.zeros(4, len(space))):           # a hyper step's feed: no values, no term
        lm(tokens)
    assert lm.activation_penalty() is None
    lm.eval()
    with fastdstn.feeding(None, values=values):
        lm(tokens)
    assert lm.activation_penalty() is None
    assert "ar" not in {h.name for h in models.build("lstm", vocab=30, size=8,
                                                      activation_regularization=False).hypers}


def test_simple_cnn_trains_with_cutout_through_the_trainer(tmp_path):
    config = tiny_config(data={"name": "synthetic-images", "features": 28, "synthetic_size": [32, 8],
                               "batch_size": 16}, model={"name": "simple-cnn", "options": {}},
                         train={"epochs": 1})
    trainer = Trainer(config, None, progress=False)
    summary = trainer.fit()
    assert summary["hyper_steps"] == 1 and set(summary["final_hypers"]) >= {"cutout_length", "cutout_holes"}


def test_gpt_is_a_converted_transformer_with_tied_embeddings():
    built = models.build("gpt", vocab=30, size=8, heads=2, context=6)
    gpt, report = built.model, built.model.stn_conversion
    assert report.complete and gpt.head.weight is gpt.tokens.weight
    assert {hyper for hyper, _ in report.dropout.values()} == {"dropout_embed", "dropout_attn", "dropout_resid"}
    assert built.weight_decay == "weight_decay" and built.batch_dim == 1 and built.task == "language"
    tokens = torch.randint(0, 30, (6, 3))                 # time-major, as the PTB loader gives them
    one_round(built, tokens, torch.randint(0, 30, (6, 3)))
    assert gpt.eval()(tokens[:4]).shape == (4, 3, 30)     # a shorter last window
