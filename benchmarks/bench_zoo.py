"""Step cost of the converted models of tests/zoo/zoo.py: the original model's plain SGD step against the
converted model's training steps (fixed = general weights only, STN, centered STN, Δ-STN) and its hyper step.

Providers run interleaved in one process on the same batch, and each ratio is the median of per-round ratios
(timing.paired), which is what survives a shared machine.

    python benchmarks/bench_zoo.py [--models resnet18 gpt2 ...] [--image-batch 32] [--token-batch 16]
                                   [--budget 20] [--threads 2] [--out benchmarks/RESULTS_zoo.md]
"""
from __future__ import annotations

import argparse
import copy
import os
import statistics
import sys
from typing import Callable, Dict

import torch

from fastdstn import HyperSpace, SelfTuning, convert, make_optimizers

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "zoo"))
import zoo  # noqa: E402
from results import machine_info  # noqa: E402
from timing import interleave, paired, timed  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
MODES = ("fixed", "stn", "centered", "delta")
TOKEN_MODELS = ("gpt2", "bert", "llama", "gpt")


def providers(z: zoo.ZooModel) -> Dict[str, Callable[[], Dict[str, float]]]:
    """plain: SGD (momentum 0.9) on the original; each mode's train_step and Δ-STN's hyper step on a converted
    copy (weight decay "wd" tuned, the zoo's dropout sites mapped)."""
    original = z.model
    sgd = torch.optim.SGD(original.parameters(), lr=0.01, momentum=0.9)

    def plain() -> None:
        loss = z.loss_fn(original(z.inputs), z.targets)
        sgd.zero_grad(set_to_none=True)
        loss.backward()
        sgd.step()

    steps = {"plain": timed(plain)}
    for mode in MODES:
        space = HyperSpace(z.hypers)
        model = convert(copy.deepcopy(original), space, dropout=z.dropout)
        method = SelfTuning(model, space, mode, loss_fn=z.loss_fn, weight_decay="wd")
        optimizers = make_optimizers(model, space, mode)
        steps[mode] = timed(lambda m=method, o=optimizers: m.train_step(z.inputs, z.targets, o))
        if mode == "delta":
            steps["hyper"] = timed(lambda m=method, o=optimizers: m.hyper_step(z.inputs, z.targets, o.hyper))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(zoo.ZOO), choices=list(zoo.ZOO))
    parser.add_argument("--image-batch", type=int, default=32)
    parser.add_argument("--token-batch", type=int, default=16)
    parser.add_argument("--budget", type=float, default=20.0, help="seconds of interleaved rounds per model")
    parser.add_argument("--min-rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=os.path.join(HERE, "RESULTS_zoo.md"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    info = machine_info(torch.device("cpu"))
    load = os.getloadavg()[0]
    rows = []
    for name in args.models:
        batch = args.token_batch if name in TOKEN_MODELS else args.image_batch
        z = zoo.build(name, batch)
        samples, rounds = interleave(providers(z), args.budget, args.min_rounds, max_rounds=1000)
        plain = samples["plain"]["full"]
        ratio = {n: statistics.median(paired(samples[n]["full"], plain)) for n in samples if n != "plain"}
        report = convert(copy.deepcopy(z.model), HyperSpace(z.hypers), dropout=z.dropout).stn_conversion
        params = sum(p.numel() for p in z.model.parameters())
        rows.append(f"| {name} | {batch} | {params / 1e6:.2f} | {len(report.converted)} | "
                    f"{'yes' if report.complete else 'no'} | {statistics.median(plain) * 1e3:.1f} | "
                    + " | ".join(f"{ratio[n]:.2f}" for n in (*MODES, "hyper")) + f" | {rounds} |")
        print(rows[-1], flush=True)
    header = [
        "# Converted zoo models: step cost against a plain SGD step",
        "",
        f"`python benchmarks/bench_zoo.py --threads {args.threads} --image-batch {args.image_batch} --token-batch "
        f"{args.token_batch} --budget {args.budget:g}`, {info['timestamp']}, {info['cpu']}, {args.threads} threads, "
        f"torch {info['torch']}, fastdstn {info['fastdstn']}, ops backend auto; load average {load:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end (a shared machine: the ratios are the robust figures).",
        "",
        "Models from `tests/zoo/zoo.py` (tiny configurations except resnet18, which has its full width; 32×32 images, "
        f"{zoo.SEQ}-token sequences). Ratios: the median over interleaved rounds of (step time / the same round's plain SGD "
        "step of the original model); `fixed` trains the converted model's general weights only (the conversion's "
        "own overhead), `hyper` is Δ-STN's hyper step.",
        "",
        "| model | batch | params (M) | modules converted | coverage complete | plain ms | fixed × | STN × | "
        "centered × | Δ-STN × | hyper × | rounds |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(header + rows) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
