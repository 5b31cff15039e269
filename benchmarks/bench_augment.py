"""Images/s of the batched per-example augmentation against per-example torchvision v2 pipelines.

    .venv/bin/python benchmarks/bench_augment.py [--rounds 15] [--threads 1[,2]] [--batch 128] [--device cpu]
                                                 [--csv FILE] [--label TEXT] [--smoke]

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

The rows (suite augment: per provider and thread count, ms per batch and images/s at p20/p50/p80 of ≥ 10
rounds, the speed-ups as medians of per-round ratios) are appended to benchmarks/results.csv and rendered by
`benchmarks/report.py`; benchmarks/history/augment.md holds the tables earlier runs wrote there. One thread by
default: on a loaded 2-core machine two OpenMP threads
oversubscribe the cores and the batched ops stall at their barriers (seconds per batch were measured).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from fastdstn.data import Augmenter

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from results import RESULTS_CSV, append_rows, machine_info, make_row, time_rows  # noqa: E402
from timing import clock, interleave, paired, percentiles  # noqa: E402

COLD, WARM = "batched (fastdstn Augmenter)", "batched, 5 calls back to back (per call)"
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", default="1",
                        help="comma-separated torch CPU thread counts, each measured in the same rounds")
    parser.add_argument("--csv", default=RESULTS_CSV, help="the results table to append the rows to")
    parser.add_argument("--label", default="", help="the allocator setting measured (recorded as the rows' malloc)")
    parser.add_argument("--smoke", action="store_true", help="a tiny batch, the fewest rounds; writes nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.rounds, args.batch = 10, 4
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
        COLD: lambda: augmenter(normalized, values),
        WARM: back_to_back,
        "tv2-objects (per image)": lambda: tv2_objects(pixels, values),
        "tv2-functional (per image)": lambda: tv2_functional(pixels, values),
    }

    def at(t, name):
        # Thread counts are interleaved too, so that load changes hit every setting alike.
        calls = 5 if name == WARM else 1

        def run():
            torch.set_num_threads(t)
            start = now()
            providers[name]()
            return {"full": (now() - start) / calls}
        return run

    samples, _ = interleave({(t, name): at(t, name) for t in threads for name in providers}, 0.0, args.rounds,
                            args.rounds, warmup=1)
    info = machine_info(device)
    info["malloc"] = args.label or "default"
    shape = f"B{args.batch} 3x32x32"
    rows = []
    for t in threads:
        seconds = {name: samples[(t, name)]["full"] for name in providers}
        mode = f"threads={t}"
        rows += time_rows(info, "augment", "augment", mode, shape, seconds, COLD)
        warm = seconds[WARM]
        for name, times in seconds.items():
            per_second = [args.batch / s for s in times]
            rows.append(make_row(info, "augment", "augment", name, mode, shape, "images_per_s",
                                 percentiles(per_second), len(times)))
            if not name.startswith("batched"):
                rows.append(make_row(info, "augment", "augment", name, mode, shape, "time_ratio_warm",
                                     percentiles(paired(times, warm)), len(times)))
            p20, p50, p80 = percentiles(times)
            print(f"threads {t} | {name}: {p50 * 1e3:.2f} ms per batch ({p20 * 1e3:.2f}–{p80 * 1e3:.2f}), "
                  f"{args.batch / p50:,.0f} images/s"
                  + ("" if name.startswith("batched") else
                     f", batched is {statistics.median(paired(times, seconds[COLD])):.1f}x faster cold, "
                     f"{statistics.median(paired(times, warm)):.1f}x back to back"), flush=True)
    if not args.smoke:
        append_rows(rows, args.csv)


if __name__ == "__main__":
    main()
