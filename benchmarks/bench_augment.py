"""Images/s of the batched per-example augmentation against per-example torchvision v2 pipelines.

    .venv/bin/python benchmarks/bench_augment.py [--rounds 15] [--threads 1[,2]] [--batch 128] [--device cpu]
                                                 [--out FILE] [--append --label TEXT]

Every image has its own magnitudes (as under Δ-STN's per-example perturbation): flip probability, rotation,
translation, scale, shear, brightness, contrast, saturation, hue, cutout holes and length. Providers, run in
the same process on the same batch, interleaved round by round so that a noisy, shared machine slows all of
them alike:

* batched: `fastdstn.data.Augmenter` on the normalized batch (mapped to pixel space and back, as the trainer
  calls it), all examples at once; once per round (cold: right after the per-image loops) and 5 times back
  to back (warm: the steady state of augmenting batch after batch).
* tv2-objects: for each image, a `v2.Compose` of RandomHorizontalFlip, RandomAffine, ColorJitter built with
  that image's magnitudes (how per-example magnitudes are expressed with transform objects), then cutout by
  slicing (torchvision has no cutout; RandomErasing draws aspect ratios instead of squares).
* tv2-functional: the same per image with parameters drawn by hand and `v2.functional` calls (no object
  construction: the cheapest a per-example loop can be).

The table (medians and p20/p80 of ≥ 10 rounds; the speed-up is the median of per-round ratios) goes to
benchmarks/history/augment.md. One thread by default: on a loaded 2-core machine two OpenMP threads
oversubscribe the cores and the batched ops stall at their barriers (seconds per batch were measured).
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys

import torch
import torchvision
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fastdstn.data import Augmenter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import clock, interleave, paired, percentiles  # noqa: E402

BASE = {"hflip": 0.5, "degrees": 15.0, "translate": 0.1, "scale": 0.1, "shear": 5.0, "brightness": 0.3,
        "contrast": 0.3, "saturation": 0.3, "hue": 0.05, "cutout_holes": 1.5, "cutout_length": 12.0}
MEAN, STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)


def per_example_values(batch: int, generator: torch.Generator) -> dict:
    """Each magnitude jittered per example (log-normal, σ = 0.3) and kept inside its valid range."""
    values = {}
    for k, v in BASE.items():
        x = v * torch.exp(0.3 * torch.randn(batch, generator=generator))
        hi = {"hflip": 1.0, "translate": 1.0, "scale": 0.9, "hue": 0.5, "shear": 80.0}.get(k)
        values[k] = x.clamp(max=hi) if hi is not None else x
    return values


def cutout_slices(img: torch.Tensor, holes: float, length: float, fill: float = 0.0) -> torch.Tensor:
    """DeVries & Taylor's per-image cutout with tensor slicing: floor(holes) squares of side floor(length)."""
    h, w = img.shape[-2:]
    side = int(length)
    img = img.clone()
    for _ in range(int(holes) if side > 0 else 0):
        cy, cx = int(torch.randint(h, ())), int(torch.randint(w, ()))
        y0, x0 = max(cy - side // 2, 0), max(cx - side // 2, 0)
        img[:, y0:max(cy - side // 2 + side, 0), x0:max(cx - side // 2 + side, 0)] = fill
    return img


def tv2_objects(pixels: torch.Tensor, values: dict) -> torch.Tensor:
    out = []
    for i in range(pixels.shape[0]):
        m = {k: float(v[i]) for k, v in values.items()}
        pipeline = v2.Compose([
            v2.RandomHorizontalFlip(m["hflip"]),
            v2.RandomAffine(m["degrees"], translate=(m["translate"], m["translate"]),
                            scale=(1 - m["scale"], 1 + m["scale"]), shear=m["shear"],
                            interpolation=v2.InterpolationMode.BILINEAR),
            v2.ColorJitter(m["brightness"], m["contrast"], m["saturation"], m["hue"]),
            v2.Normalize(MEAN, STD),
        ])
        out.append(cutout_slices(pipeline(pixels[i]), m["cutout_holes"], m["cutout_length"]))
    return torch.stack(out)


def tv2_functional(pixels: torch.Tensor, values: dict) -> torch.Tensor:
    out = []
    h, w = pixels.shape[-2:]
    for i in range(pixels.shape[0]):
        m = {k: float(v[i]) for k, v in values.items()}
        u = torch.rand(10).tolist()
        img = pixels[i]
        if u[0] < m["hflip"]:
            img = TF.horizontal_flip(img)
        shift = [round(m["translate"] * w * (2 * u[2] - 1)), round(m["translate"] * h * (2 * u[3] - 1))]
        img = TF.affine(img, angle=m["degrees"] * (2 * u[1] - 1), translate=shift,
                        scale=1 + m["scale"] * (2 * u[4] - 1), shear=[m["shear"] * (2 * u[5] - 1), 0.0],
                        interpolation=TF.InterpolationMode.BILINEAR)
        factors = [max(0.0, 1 - m[k]) + (1 + m[k] - max(0.0, 1 - m[k])) * r
                   for k, r in zip(("brightness", "contrast", "saturation"), u[6:9])]
        ops = [lambda x: TF.adjust_brightness(x, factors[0]), lambda x: TF.adjust_contrast(x, factors[1]),
               lambda x: TF.adjust_saturation(x, factors[2]), lambda x: TF.adjust_hue(x, m["hue"] * (2 * u[9] - 1))]
        for k in torch.randperm(4).tolist():
            img = ops[k](img)
        img = TF.normalize(img, MEAN, STD)
        out.append(cutout_slices(img, m["cutout_holes"], m["cutout_length"]))
    return torch.stack(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1",
                        help="comma-separated torch CPU thread counts, each measured in the same rounds")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "history", "augment.md"))
    parser.add_argument("--append", action="store_true", help="add a section to --out instead of replacing it")
    parser.add_argument("--label", default="", help="a note for the section heading (e.g. the malloc settings)")
    args = parser.parse_args()
    if args.rounds < 10:
        parser.error("--rounds: at least 10 (medians of ≥ 10 rounds)")
    threads = [int(t) for t in args.threads.split(",")]
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    pixels = torch.rand(args.batch, 3, 32, 32, generator=g).to(device)
    normalized = TF.normalize(pixels, MEAN, STD)
    values = {k: v.to(device) for k, v in per_example_values(args.batch, g).items()}
    augmenter = Augmenter({k: k for k in BASE}, mean=MEAN, std=STD)
    now = clock(device)

    def back_to_back():
        # The same call 5 times in a row, timed per call by the caller's clock / 5: the steady state of a
        # loop that augments batch after batch (allocator and caches warm), next to the cold single call.
        for _ in range(5):
            augmenter(normalized, values)

    providers = {
        "batched (fastdstn Augmenter)": lambda: augmenter(normalized, values),
        "batched, 5 calls back to back (per call)": back_to_back,
        "tv2-objects (per image)": lambda: tv2_objects(pixels, values),
        "tv2-functional (per image)": lambda: tv2_functional(pixels, values),
    }

    def at(t, name):
        # Thread counts are interleaved too, so that load changes hit every setting alike.
        calls = 5 if name.startswith("batched, 5") else 1

        def run():
            torch.set_num_threads(t)
            start = now()
            providers[name]()
            return {"full": (now() - start) / calls}
        return run

    samples, _ = interleave({(t, name): at(t, name) for t in threads for name in providers}, 0.0, args.rounds,
                            args.rounds, warmup=1)
    times = {k: by_mode["full"] for k, by_mode in samples.items()}
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("?",) * 3
    env = " ".join(f"{k}={v}" for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_"))
    lines = [
        f"## {args.label or 'default settings'}" + (f" (`{env}`)" if env else ""),
        "",
        f"Written by `benchmarks/bench_augment.py --rounds {args.rounds} --threads {args.threads}` on "
        f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Device: {device} ({platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
        f"load average {load[0]:.2f} at the end: a machine shared with other jobs), "
        f"torch {torch.__version__}, torchvision {torchvision.__version__}.",
        "",
        f"Batch {args.batch}×3×32×32, every image with its own magnitudes (flip, rotation, translation, scale, "
        f"shear, brightness, contrast, saturation, hue, cutout holes and length), {args.rounds} interleaved "
        f"rounds after one warm-up. images/s at p20/p50/p80 of the round times (p20 = the slow end); "
        f"speed-up = median over rounds of (provider time / batched time in the same round and thread count); "
        f"the back-to-back row is divided by 5 (time per call). best = the fastest round (the least disturbed "
        f"by other jobs); best vs best = fastest per-image round / fastest back-to-back batched round.",
        "",
        "| threads | provider | images/s p20 | images/s p50 | images/s p80 | images/s best | ms / batch (p50) "
        "| speed-up of batched: cold call | back to back | best vs best |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in threads:
        cold = times[(t, "batched (fastdstn Augmenter)")]
        warm = times[(t, "batched, 5 calls back to back (per call)")]
        for name in providers:
            ts = times[(t, name)]
            if name.startswith("batched"):
                ratios = "| — | — | — |"
            else:
                ratios = (f"| {statistics.median(paired(ts, cold)):.1f}x "
                          f"| {statistics.median(paired(ts, warm)):.1f}x "
                          f"| {min(ts) / min(warm):.1f}x |")
            p20, p50, p80 = percentiles(ts)
            lines.append(f"| {t} | {name} | {args.batch / p80:,.0f} | "
                         f"{args.batch / p50:,.0f} | {args.batch / p20:,.0f} | "
                         f"{args.batch / min(ts):,.0f} | {p50 * 1e3:.2f} {ratios}")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.append:
        with open(args.out, "a", encoding="utf-8") as f:
            f.write("\n" + text)
    else:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write("# Batched per-example augmentation vs per-image torchvision v2\n\n"
                    "Target: ≥ 20x against a per-example torchvision pipeline.\n\n" + text)


if __name__ == "__main__":
    main()
