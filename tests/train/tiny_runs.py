"""Tiny synthetic runs for the trainer tests: a few hundred examples, one small hidden layer."""
import copy

from fastdstn.config import from_dict

TINY = {
    "name": "tiny",
    "data": {"name": "synthetic", "batch_size": 16, "eval_batch_size": 64, "synthetic_size": [128, 64],
             "features": 8, "classes": 4},
    "model": {"name": "mlp", "options": {"hidden": [16]}},
    "train": {"mode": "delta", "epochs": 2, "train_steps": 2, "valid_steps": 1, "lr": 0.05, "hyper_lr": 0.05,
              "device": "cpu", "seed": 3},
}


def tiny_values(**sections):
    """TINY with per-section updates, e.g. tiny_values(train={"epochs": 3})."""
    values = copy.deepcopy(TINY)
    for section, updates in sections.items():
        if isinstance(updates, dict) and isinstance(values.get(section), dict):
            values[section].update(updates)
        else:
            values[section] = updates
    return values


def tiny_config(**sections):
    return from_dict(tiny_values(**sections))

