"""Presets resolve; bad configurations fail with an error that names the key."""
import pytest

from fastdstn import config as cfg
from fastdstn.config import ConfigError, from_dict

from tiny_runs import tiny_values

ALL_PRESETS = ["uci-linear", "mnist-mlp", "mnist-mlp-5k", "fmnist-cnn", "cifar10-alexnet", "cifar10-vgg16", "cifar10-resnet18",
               "ptb-lstm", "ptb-gpt", "fmnist-quick"]


def test_every_preset_is_shipped_and_resolves():
    assert set(ALL_PRESETS) <= set(cfg.presets())
    for name in ALL_PRESETS:
        config = cfg.load(name)
        assert config.name == name
        assert config.train.mode == "delta"


def test_fmnist_quick_is_the_small_delta_stn_simple_cnn():
    config = cfg.load("fmnist-quick")
    assert (config.model.name, config.data.name, config.train.mode) == ("simple-cnn", "fashion-mnist", "delta")
    assert config.data.train_size <= 10000 and config.train.epochs <= 5


@pytest.mark.parametrize("name", ["mnist-mlp", "mnist-mlp-5k", "fmnist-cnn"])
def test_mnist_and_fmnist_presets_follow_the_authors_recipe(name):
    """docs/METHOD.md §8b: SGD 0.01 momentum 0.9, RMSprop 1e-2 for λ/σ, constant lr, no early stopping, 5 warm-up
    epochs, T_train/T_valid 5/1, τ 1e-3; Fashion-MNIST on raw pixels."""
    train = cfg.load(name).train
    assert (train.lr, train.momentum, train.response_lr) == (0.01, 0.9, None)
    assert (train.hyper_optimizer, train.hyper_lr, train.tau) == ("rmsprop", 0.01, 1e-3)
    assert (train.lr_schedule, train.early_stopping) == ("none", 0)
    assert (train.warmup_epochs, train.train_steps, train.valid_steps) == (5, 5, 1)
    assert cfg.load(name).data.normalize is (not name.startswith("fmnist"))


def test_the_library_defaults_tune_at_the_authors_rate():
    train = cfg.TrainConfig()
    assert (train.hyper_optimizer, train.hyper_lr) == ("rmsprop", 0.01)


@pytest.mark.parametrize("name, model, tau", [("cifar10-alexnet", "alexnet", 1e-3), ("cifar10-vgg16", "vgg16", 1e-4)])
def test_cifar_presets_follow_the_authors_recipe(name, model, tau):
    config = cfg.load(name)
    data, train = config.data, config.train
    assert (config.model.name, data.name, data.valid_size, data.batch_size) == (model, "cifar10", 10000, 128)
    assert (train.mode, train.epochs, train.warmup_epochs) == ("delta", 200, 5)
    assert (train.train_steps, train.valid_steps) == (5, 1)
    assert (train.lr, train.response_lr, train.momentum) == (0.01, None, 0.9)
    assert (train.hyper_optimizer, train.hyper_lr, train.tau) == ("rmsprop", 0.01, tau)
    assert (train.lr_schedule, train.lr_milestones, train.lr_gamma) == ("multistep", [60, 120, 180], 0.2)
    assert train.early_stopping == 0 and not train.linearized_hyper
    assert data.normalize   # the authors normalise CIFAR-10; cutout fills 0 there


def test_command_line_options_and_overrides_win():
    config = cfg.load("fmnist-quick", ["train.lr=0.5", "hypers.dropout_in.init=0.2", "data.root='/x'"],
                      mode="centered", epochs=7, seed=None)
    assert (config.train.lr, config.train.mode, config.train.epochs) == (0.5, "centered", 7)
    assert config.hypers == {"dropout_in": {"init": 0.2}}
    assert config.data.root == "/x"


@pytest.mark.parametrize("text, path, value", [
    ("train.lr=0.1", ["train", "lr"], 0.1), ("train.epochs=3", ["train", "epochs"], 3),
    ("train.amp=true", ["train", "amp"], True), ("data.root=/tmp/data", ["data", "root"], "/tmp/data"),
    ("train.lr_milestones=[2, 4]", ["train", "lr_milestones"], [2, 4]), ("data.root=null", ["data", "root"], None),
])
def test_parse_override(text, path, value):
    assert cfg.parse_override(text) == (path, value)


@pytest.mark.parametrize("section, updates, message", [
    ("train", {"lrr": 0.1}, "unknown config key train.'lrr'; did you mean train.'lr'?"),
    ("data", {"batchsize": 3}, "did you mean data.'batch_size'?"),
    ("train", {"lr": -1.0}, "train.lr: expected a value > 0, received -1.0"),
    ("train", {"momentum": 1.5}, "train.momentum: expected a value in [0, 1), received 1.5"),
    ("train", {"mode": "delts"}, "train.mode: expected one of 'delta', 'centered', 'stn', 'fixed', received 'delts'"),
    ("train", {"epochs": 2.5}, "train.epochs: expected an integer, received 2.5"),
    ("train", {"amp": "yes"}, "train.amp: expected true or false"),
    ("train", {"warmup_epochs": 2}, "train.warmup_epochs: 2 warm-up epochs leave no hyper step"),
    ("train", {"lr_schedule": "multistep"}, "train.lr_milestones: the multistep schedule needs"),
    ("hypers", {"dropout_in": {"intit": 0.1}}, "unknown config key hypers.dropout_in.'intit'; did you mean"),
])
def test_bad_values_name_the_key(section, updates, message):
    with pytest.raises(ConfigError) as err:
        from_dict(tiny_values(**{section: updates}))
    assert message in str(err.value)


def test_unknown_top_level_section_suggests():
    with pytest.raises(ConfigError, match=r"unknown config key 'trian'; did you mean 'train'\?"):
        from_dict({**tiny_values(), "trian": {}})


def test_unknown_preset_suggests_nearest():
    with pytest.raises(ConfigError, match="did you mean 'fmnist-quick'"):
        cfg.load("fmnist-quik")


def test_toml_and_yaml_files(tmp_path):
    toml = tmp_path / "run.toml"
    toml.write_text('[train]\nepochs = 3\nmode = "stn"\n[data]\nname = "synthetic"\n')
    yaml_file = tmp_path / "run.yaml"
    yaml_file.write_text("train:\n  epochs: 3\n  mode: stn\ndata:\n  name: synthetic\n")
    a, b = cfg.load(str(toml)), cfg.load(str(yaml_file))
    assert a.train == b.train and a.train.epochs == 3 and a.train.mode == "stn"


def test_broken_files_are_reported(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[train\nepochs = 3\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cfg.load(str(bad))
    typo = tmp_path / "typo.yaml"
    typo.write_text("train:\n  epoch: 3\n")
    with pytest.raises(ConfigError, match="did you mean train.'epochs'"):
        cfg.load(str(typo))


def test_full_mnist_preset_refuses_the_offline_subset():
    """mnist-mlp is the paper's 60000-digit experiment: without data.root it names the fix instead of training on
    the 5000-digit subset."""
    import torch
    from fastdstn.train.loaders import load_data

    with pytest.raises(ConfigError, match=r"^data\.root: .*mnist-mlp-5k"):
        load_data(cfg.load("mnist-mlp").data, 0, torch.device("cpu"))
