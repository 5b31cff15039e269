"""Ablations of one Δ-STN run: which of the method's settings moves its best validation loss.

Each variant is the base run (`--preset`, `--epochs`, `--seed`, `--set`) with a few more overrides; the table
gives each variant's best validation loss, the test loss at that epoch and the hyperparameters it ended at.
Losses do not depend on the machine's load, so the variants may share a busy machine.

    python benchmarks/ablations.py --preset mnist-mlp-5k --epochs 20 \\
        --set train.warmup_epochs=1 --set train.hyper_lr=0.03

Writes runs/ablations/<preset>/<variant>/ and prints a markdown table.
"""
from __future__ import annotations

import argparse
import json
import os

from fastdstn.config import load as load_config
from fastdstn.models import build
from fastdstn.train.trainer import Trainer

# name → overrides on top of the base run; `{hyper}` expands to every tuned hyperparameter of the model,
# `{dropout}` to its dropout rates.
VARIANTS = {
    "base": [],
    "no tuning (fixed mode)": ["train.mode=fixed"],
    "dropouts start at 0.3": ["hypers.{dropout}.init=0.3"],
    "hyper_lr ÷3": ["train.hyper_lr={hyper_lr_third}"],
    "hyper_lr ×3": ["train.hyper_lr={hyper_lr_triple}"],
    "warm-up 5 epochs": ["train.warmup_epochs=5"],
    "T_train 2": ["train.train_steps=2"],
    "T_train 10": ["train.train_steps=10"],
    "σ0 0.5": ["hypers.{hyper}.scale=0.5"],
    "τ 0": ["train.tau=0"],
    "linearized hyper step": ["train.linearized_hyper=true"],
    "perturbation per batch": ["hypers.{hyper}.per_example=false"],
}


def overrides_for(variant: str, hypers, hyper_lr: float):
    out = []
    for text in VARIANTS[variant]:
        text = text.format(hyper="{name}", dropout="{dropout}", hyper_lr_third=hyper_lr / 3,
                           hyper_lr_triple=hyper_lr * 3)
        if "{name}" in text:
            out += [text.format(name=h) for h in hypers]
        elif "{dropout}" in text:
            out += [text.format(dropout=h) for h in hypers if h.startswith("dropout")]
        else:
            out.append(text)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", required=True)
    parser.add_argument("--epochs", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="base run overrides")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--out", default=os.path.join("runs", "ablations"))
    args = parser.parse_args()
    base = args.set + [f"train.epochs={args.epochs}", f"train.seed={args.seed}", "train.mode=delta"]
    base_config = load_config(args.preset, overrides=base)
    hypers = [h.name for h in build(base_config.model.name, **base_config.model.options).hypers]
    print("| variant | overrides | best val | test at best | epoch | final hyperparameters |")
    print("|---|---|---|---|---|---|")
    for variant in args.variants:
        extra = overrides_for(variant, hypers, base_config.train.hyper_lr)
        run_dir = os.path.join(args.out, args.preset, variant.replace(" ", "_"))
        Trainer(load_config(args.preset, overrides=base + extra), run_dir, progress=False).fit(overwrite=True)
        with open(os.path.join(run_dir, "summary.json")) as f:
            summary = json.load(f)
        best, final = summary["best"], summary["final_hypers"]
        shown = ", ".join(f"{k}={v:.3g}" for k, v in final.items())
        print(f"| {variant} | {' '.join(extra) or '–'} | {best['val_loss']:.4f} | {best['test_loss']:.4f} "
              f"| {best.get('epoch', '')} | {shown} |", flush=True)


if __name__ == "__main__":
    main()
