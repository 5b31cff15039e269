"""Run the whole benchmark suite: write benchmarks/results.csv, benchmarks/RESULTS.md and the PNG plots.

    python benchmarks/run_all.py                  # full run, ~5-8 min on 2 busy CPU threads
    python benchmarks/run_all.py --quick          # a fast pass (what compare.py runs by default)
    python benchmarks/run_all.py --render-only    # regenerate RESULTS.md and plots from the CSV

Suites:
  ops    stn_linear_dual / stn_conv2d_dual with every backend that runs on the device, against the
         "floor" (the bare torch.mm / F.conv2d / convolution_backward calls of the same shapes);
         modes fwd (forward with autograd recording), bwd (Δ-STN response-sub-step backward: grads of
         ẋ, W_r, b_r, V only) and full (fwd + bwd of the same call).
  steps  a plain SGD step against the STN / centered / Δ-STN training step and hyper step, with every
         backend, for the MLP, SimpleCNN and a small LSTM LM; saved-for-backward bytes per step
         (and torch.cuda.max_memory_allocated on CUDA).

Every provider of a case runs in the same process on the same inputs, interleaved round by round in a
rotating order, so that a drift of a shared machine hits every provider alike: the ratios
(provider / floor, step / plain) are what survive; absolute times move with the machine's load.
"""
from __future__ import annotations

import argparse
import csv
import datetime
import gc
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
import fastdstn  # noqa: E402
from fastdstn.ops import cpp  # noqa: E402
from fastdstn.train.allocator import keep_freed_memory  # noqa: E402

FIELDS = ["suite", "op", "provider", "mode", "shape", "metric", "p20", "p50", "p80", "rounds", "device", "cpu",
          "threads", "torch", "fastdstn", "timestamp", "loadavg", "malloc", "cpu_isa", "small_gemm"]
RESULTS_CSV = os.path.join(HERE, "results.csv")
RESULTS_MD = os.path.join(HERE, "RESULTS.md")
STEP_NAMES = [name for name, *_ in cases.STEPS]

Row = Dict[str, str]


# ------------------------------------------------------------------------------------------- timing
def percentiles(samples: Sequence[float]) -> Tuple[float, float, float]:
    """p20, p50, p80 (inclusive linear interpolation, as numpy's default)."""
    if len(samples) == 1:
        return samples[0], samples[0], samples[0]
    q = statistics.quantiles(samples, n=10, method="inclusive")
    return q[1], statistics.median(samples), q[7]


class Timer:
    """perf_counter that waits for the GPU first when timing CUDA work."""

    def __init__(self, device: torch.device) -> None:
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def __call__(self) -> float:
        self.sync()
        return time.perf_counter()


def interleave(providers: Dict[str, Callable[[], Dict[str, float]]], budget_s: float, min_rounds: int,
               max_rounds: int, warmup: int = 1) -> Tuple[Dict[str, Dict[str, List[float]]], int]:
    """Run every provider once per round, in an order rotated each round, until the time budget is spent
    (but at least min_rounds, at most max_rounds). A provider returns {mode: seconds} for one call.
    warmup=0 is for callers that already ran every provider once (steps: the saved-bytes pass)."""
    names = list(providers)
    for _ in range(warmup):
        for name in names:
            providers[name]()
    samples: Dict[str, Dict[str, List[float]]] = {n: defaultdict(list) for n in names}
    gc.collect()
    start, rounds = time.perf_counter(), 0
    while rounds < max_rounds and (rounds < min_rounds or time.perf_counter() - start < budget_s):
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            for mode, seconds in providers[name]().items():
                samples[name][mode].append(seconds)
        rounds += 1
    return samples, rounds


def paired(times: Sequence[float], denominators: Sequence[float]) -> List[float]:
    """Per-round ratios: round r's time over the denominator's time in the same round. Calls of one round
    run seconds apart at most, so a load change that lasts longer than a round cancels out of each ratio,
    which the ratio of two medians over the whole run does not do."""
    return [t / d for t, d in zip(times, denominators)]


# --------------------------------------------------------------------------------------------- rows
def machine_info(device: torch.device) -> Dict[str, str]:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(device=torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu", cpu=cpu,
                threads=str(torch.get_num_threads()), torch=torch.__version__, fastdstn=fastdstn.__version__,
                timestamp=datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))


def make_row(info, suite, op, provider, mode, shape, metric, values: Tuple[float, float, float], rounds) -> Row:
    row = dict(suite=suite, op=op, provider=provider, mode=mode, shape=shape, metric=metric,
               p20=f"{values[0]:.6g}", p50=f"{values[1]:.6g}", p80=f"{values[2]:.6g}", rounds=str(rounds),
               loadavg=f"{os.getloadavg()[0]:.2f}")     # the machine's 1-min load when the case finished
    row.update(info)
    return row


def key(row: Row) -> Tuple[str, ...]:
    return tuple(row[k] for k in ("suite", "op", "provider", "mode", "shape", "metric"))


def denominator(row: Row) -> Optional[Tuple[str, ...]]:
    """The row a ratio divides by: ops → the floor of the same op/mode/shape; steps → the plain step of
    the same model. None for the denominators themselves."""
    if row["suite"] == "ops":
        return None if row["provider"] == "floor" else ("ops", row["op"], "floor", row["mode"], row["shape"],
                                                          row["metric"])
    if row["suite"] == "steps":
        return None if row["op"] == "plain" else ("steps", "plain", "torch", row["mode"], row["shape"],
                                                    row["metric"])
    return None


def latest(rows: Iterable[Row]) -> Dict[Tuple[str, ...], Row]:
    """The newest row per key (results.csv may hold appended runs)."""
    out: Dict[Tuple[str, ...], Row] = {}
    for row in rows:
        k = key(row)
        if k not in out or row["timestamp"] >= out[k]["timestamp"]:
            out[k] = row
    return out


def ratios(rows: Iterable[Row]) -> Dict[Tuple[str, ...], float]:
    """Every row's ratio to its denominator, keyed like the row: for times, the median of the paired
    per-round ratios (the "time_ratio" row) when the run recorded them, else p50 / denominator's p50;
    for memory, p50 / p50."""
    table = latest(rows)
    out = {}
    for k, row in table.items():
        d = denominator(row)
        if row["metric"] == "time_ratio" or d is None or d not in table:
            continue
        pair = table.get(k[:5] + ("time_ratio",)) if row["metric"] == "time_ms" else None
        if pair is not None:
            out[k] = float(pair["p50"])
        elif float(table[d]["p50"]) > 0:
            out[k] = float(row["p50"]) / float(table[d]["p50"])
    return out


def read_csv(path: str) -> List[Row]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_csv(path: str, rows: List[Row], append: bool = False) -> None:
    old = read_csv(path) if append and os.path.exists(path) else []
    with open(path, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=FIELDS)
        writer.writeheader()
        writer.writerows(old + rows)


# ---------------------------------------------------------------------------------------------- ops
def run_ops(info, device, backends_, budget_s, min_rounds, max_rounds, log, linear_shapes=cases.LINEAR_SHAPES,
            conv_shapes=cases.CONV_SHAPES) -> List[Row]:
    timer = Timer(device)
    rows: List[Row] = []
    work = [("stn_linear_dual", cases.linear_label(s), lambda s=s: cases.linear_dual_case(s, backends_, device))
            for s in linear_shapes]
    work += [("stn_conv2d_dual", cases.conv_label(s), lambda s=s: cases.conv_dual_case(s, backends_, device))
             for s in conv_shapes]
    for op, shape, build in work:
        def timed(forward, backward):
            def run():
                t0 = timer()
                state = forward()
                t1 = timer()
                backward(state)
                t2 = timer()
                return {"fwd": t1 - t0, "bwd": t2 - t1, "full": t2 - t0}
            return run

        providers = {name: timed(*pair) for name, pair in build().items()}
        samples, rounds = interleave(providers, budget_s, min_rounds, max_rounds, warmup=1)
        for name, by_mode in samples.items():
            for mode in ("fwd", "bwd", "full"):
                ms = [s * 1e3 for s in by_mode[mode]]
                rows.append(make_row(info, "ops", op, name, mode, shape, "time_ms", percentiles(ms), rounds))
                if name != "floor":
                    rows.append(make_row(info, "ops", op, name, mode, shape, "time_ratio",
                                         percentiles(paired(by_mode[mode], samples["floor"][mode])), rounds))
        log(f"  {op:16s} {shape:28s} rounds {rounds:3d}  " + "  ".join(
            f"{n} {statistics.median(paired(samples[n]['full'], samples['floor']['full'])):.2f}x"
            for n in samples if n != "floor"))
    return rows


# -------------------------------------------------------------------------------------------- steps
def run_steps(info, device, backends_, models, budget_s, min_rounds, max_rounds, log, small=False) -> List[Row]:
    timer = Timer(device)
    rows: List[Row] = []
    for model in models:
        workload = cases.WORKLOADS[model](device=device, small=small)
        steps: Dict[Tuple[str, str], Callable[[], None]] = {("plain", "torch"): workload.plain}
        resident = {("plain", "torch"): workload.plain.resident}
        for backend in backends_:
            for name, mode, phase, linearized in cases.STEPS:
                train, hyper = workload.stn(mode, linearized_hyper=linearized)
                fn = train if phase == "train" else hyper

                def step(fn=fn, backend=backend):
                    with fastdstn.ops.use_backend(backend):
                        fn()
                steps[(name, backend)] = step
                resident[(name, backend)] = fn.resident

        # Saved-for-backward bytes (one untimed call each; also a warm-up) and the CUDA peak.
        for (name, provider), fn in steps.items():
            saved = cases.saved_bytes(fn, resident[(name, provider)]) / 2 ** 20
            rows.append(make_row(info, "steps", name, provider, "full", workload.label, "saved_MB",
                                 (saved, saved, saved), 1))
            if device.type == "cuda":
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats(device)
                fn()
                torch.cuda.synchronize()
                peak = torch.cuda.max_memory_allocated(device) / 2 ** 20
                rows.append(make_row(info, "steps", name, provider, "full", workload.label, "cuda_max_MB",
                                     (peak, peak, peak), 1))

        def timed(fn):
            def run():
                t0 = timer()
                fn()
                return {"full": timer() - t0}
            return run

        names = {f"{n}@{p}": (n, p) for n, p in steps}
        samples, rounds = interleave({label: timed(steps[names[label]]) for label in names}, budget_s,
                                     min_rounds, max_rounds, warmup=0)
        for label, by_mode in samples.items():
            name, provider = names[label]
            ms = [s * 1e3 for s in by_mode["full"]]
            rows.append(make_row(info, "steps", name, provider, "full", workload.label, "time_ms", percentiles(ms),
                                 rounds))
            if name != "plain":
                rows.append(make_row(info, "steps", name, provider, "full", workload.label, "time_ratio",
                                     percentiles(paired(by_mode["full"], samples["plain@torch"]["full"])), rounds))
        plain = samples["plain@torch"]["full"]
        log(f"  {workload.label}: rounds {rounds}, plain {statistics.median(plain) * 1e3:.1f} ms; " + ", ".join(
            f"{label} {statistics.median(paired(s['full'], plain)):.2f}x" for label, s in samples.items()
            if label != "plain@torch"))
    return rows


# ----------------------------------------------------------------------------------------- markdown
def _f(v: float, digits: int = 2) -> str:
    return f"{v:.{digits}f}"


def render_markdown(rows: List[Row], command: str = "python benchmarks/run_all.py", directory: str = HERE) -> str:
    table = latest(rows)
    rat = ratios(rows)
    if not table:
        return "# Benchmarks\n\nNo rows.\n"
    any_row = next(iter(table.values()))
    stamps = sorted(r["timestamp"] for r in table.values())
    loads = sorted(float(r["loadavg"]) for r in table.values() if r.get("loadavg"))
    load_txt = f"{loads[0]:.1f}–{loads[-1]:.1f}" if loads else "unknown"
    out = ["# fastdstn benchmarks", "",
           f"Generated by `{command}` from `benchmarks/results.csv` (do not edit by hand; "
           f"`python benchmarks/run_all.py --render-only` re-renders). Regression guard: "
           f"`python benchmarks/compare.py` (ratios against this CSV, threshold 15%).", "",
           f"* Machine: device `{any_row['device']}`, CPU `{any_row['cpu']}`, {any_row['threads']} torch threads; "
           f"torch {any_row['torch']}, fastdstn {any_row['fastdstn']} (cpp CPU loops: "
           f"{any_row.get('cpu_isa') or 'unrecorded'}; small-batch GEMM kernel: "
           f"{any_row.get('small_gemm') or 'unrecorded'}); measured {stamps[0]} – {stamps[-1]}.",
           f"* Allocator: {MALLOC_NOTE.get(any_row.get('malloc') or 'default', any_row.get('malloc'))}",
           "* **Noise.** This is a shared 2-core VM: other engineers' training runs and test suites were using "
           f"the same cores during the run (1-min load average {load_txt} on 2 cores, "
           "recorded per row), so absolute milliseconds are inflated and "
           "jumpy. Every provider of a case ran in one process on the same inputs, interleaved round by round "
           "in a rotating order, so a slowdown hits all of them alike: read the **ratios** (× floor, × plain), "
           "not the milliseconds. p20–p80 spreads show how noisy each number is.",
           "* No GPU on this machine: no GPU number appears here (the Triton backend is CUDA-only).", ""]

    ops_rows = [r for r in table.values() if r["suite"] == "ops" and r["metric"] == "time_ms"]
    out += ["Ratio columns are medians of per-round paired ratios (each call divided by its denominator's call "
            "in the same round), which cancels load changes slower than a round. † marks a ratio whose time or "
            f"denominator spread p80/p20 > {NOISY:.0f}: the load dominated it; trust it less.", ""]
    if ops_rows:
        providers = sorted({r["provider"] for r in ops_rows if r["provider"] != "floor"},
                           key=lambda p: (p != "reference", p))
        out += ["## Ops: dual STN ops vs the GEMM/conv floor", "",
                "fwd = forward with autograd recording; bwd = Δ-STN response-sub-step backward (grads of ẋ, W_r, "
                "b_r, V); full = both, from the same call. floor = the bare torch.mm / F.conv2d / "
                "convolution_backward calls of the same shapes (3 GEMMs forward, 2 backward; conv1 sees the "
                "network input, so no ẋ and one fewer conv). Median ms (p20–p80).", ""]
        head = ["op", "shape", "mode", "floor ms"] + [f"{p} ms" for p in providers] + \
               [f"{p} / floor" for p in providers]
        if "cpp" in providers and "reference" in providers:
            head.append("reference / cpp")
        out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        order = {(r["op"], r["shape"]) for r in ops_rows}
        shape_order = [(o, cases.linear_label(s)) for o, s in [("stn_linear_dual", s) for s in cases.LINEAR_SHAPES]]
        shape_order += [("stn_conv2d_dual", cases.conv_label(s)) for s in cases.CONV_SHAPES]
        shape_order = [k for k in shape_order if k in order] + sorted(order - set(shape_order))
        for op, shape in shape_order:
            for mode in ("fwd", "bwd", "full"):
                fl = table.get(("ops", op, "floor", mode, shape, "time_ms"))
                if fl is None:
                    continue
                cells = [op, shape, mode, _f(float(fl["p50"]), 3)]
                for p in providers:
                    r = table.get(("ops", op, p, mode, shape, "time_ms"))
                    cells.append("–" if r is None else
                                 f"{float(r['p50']):.3f} ({float(r['p20']):.3f}–{float(r['p80']):.3f})")
                for p in providers:
                    k = ("ops", op, p, mode, shape, "time_ms")
                    cells.append(f"{rat[k]:.2f}x{mark(table[k], fl)}" if k in rat else "–")
                if "cpp" in providers and "reference" in providers:
                    a = table.get(("ops", op, "reference", mode, shape, "time_ms"))
                    b = table.get(("ops", op, "cpp", mode, shape, "time_ms"))
                    cells.append(f"{float(a['p50']) / float(b['p50']):.2f}x" if a and b else "–")
                out.append("| " + " | ".join(cells) + " |")
        out.append("")

    step_rows = [r for r in table.values() if r["suite"] == "steps" and r["metric"] == "time_ms"]
    if step_rows:
        out += ["## Training and hyper steps vs a plain SGD step", "",
                "plain = the same network built from nn.Linear / nn.Conv2d / nn.LSTM, one SGD step (torch). "
                "`mode:train` = SelfTuning.train_step (STN: one joint step; centered / Δ-STN: general + "
                "response sub-steps on the same batch); `mode:hyper` = SelfTuning.hyper_step (the default, "
                "non-linearized one); `delta:hyper_lin` = Δ-STN's optional linearized hyper step. saved MB = "
                "distinct storages autograd saved for backward during the step, summed over its backward passes, "
                "weights and the batch left out (activation memory). "
                "SPEC §5's floor for the Δ-STN training step is ≈ 2.6–2.7x plain (8 weight GEMMs per layer "
                "against 3).", ""]
        backends_ = sorted({r["provider"] for r in step_rows if r["provider"] != "torch"},
                           key=lambda p: (p != "reference", p))
        for shape in dict.fromkeys(r["shape"] for r in step_rows):
            plain = table.get(("steps", "plain", "torch", "full", shape, "time_ms"))
            plain_mem = table.get(("steps", "plain", "torch", "full", shape, "saved_MB"))
            out += [f"### {shape}", ""]
            head = ["step"] + [f"{b} ms" for b in backends_] + [f"{b} × plain" for b in backends_] + \
                   [f"{b} saved MB" for b in backends_]
            out += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
            if plain:
                mem = f"{float(plain_mem['p50']):.1f}" if plain_mem else "–"
                out.append("| plain (torch) | " + " | ".join(
                    [f"{float(plain['p50']):.2f} ({float(plain['p20']):.2f}–{float(plain['p80']):.2f})"]
                    + [""] * (len(backends_) - 1) + ["1.00x"] + [""] * (len(backends_) - 1) + [mem]
                    + [""] * (len(backends_) - 1)) + " |")
            for name in STEP_NAMES:
                cells = [name]
                for b in backends_:
                    r = table.get(("steps", name, b, "full", shape, "time_ms"))
                    cells.append("–" if r is None else
                                 f"{float(r['p50']):.2f} ({float(r['p20']):.2f}–{float(r['p80']):.2f})")
                for b in backends_:
                    k = ("steps", name, b, "full", shape, "time_ms")
                    cells.append(f"{rat[k]:.2f}x{mark(table[k], plain)}" if k in rat else "–")
                for b in backends_:
                    r = table.get(("steps", name, b, "full", shape, "saved_MB"))
                    cells.append("–" if r is None else f"{float(r['p50']):.1f}")
                out.append("| " + " | ".join(cells) + " |")
            out.append("")
    out += observations(table, rat)
    out += time_to_quality_section(directory)
    plots = [p for p in ("ops_ratio.png", "steps_ratio.png") if os.path.exists(os.path.join(directory, p))]
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


def time_to_quality_section(directory: str) -> List[str]:
    """The rows of time_to_quality.csv (written by benchmarks/time_to_quality.py), as a table."""
    path = os.path.join(directory, "time_to_quality.csv")
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    out = ["## Time to quality", "",
           "`python benchmarks/time_to_quality.py --preset P --epochs E --seeds ...`: one Δ-STN run against Optuna's "
           "random search, TPE and GP-BO (`fixed`-mode trials, median pruning), each given the Δ-STN run's "
           "wall-clock. Best validation loss and the test loss of that model; lower is better.", "",
           "| preset | epochs | seed | method | runs | wall s | best val | test of best | measured |",
           "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['preset']} | {r['epochs']} | {r['seed']} | {r['method']} | {r['runs']} | "
                   f"{float(r['wall_time_s']):.1f} | {float(r['best_val_loss']):.4f} | "
                   f"{float(r['best_test_loss']):.4f} | {r['timestamp']} |")
    return out + [""]


NOISY = 2.0     # p80 / p20 above this: the number is dominated by the machine's load, not by the code


def noisy(*rows) -> str:
    """'; noisy: p80/p20 = …' when any of the rows spreads more than NOISY, else ''."""
    spreads = [float(r["p80"]) / float(r["p20"]) for r in rows if r and float(r["p20"]) > 0]
    worst = max(spreads, default=0.0)
    return f"; noisy: p80/p20 = {worst:.1f}" if worst > NOISY else ""


def mark(row, den) -> str:
    """The dagger that flags a ratio whose time or denominator is noisy (see NOISY)."""
    return " †" if noisy(row, den) else ""


def observations(table, rat) -> List[str]:
    """Findings computed from the numbers, including where fastdstn does not win."""
    lines = ["## Where the fused backend wins and where it does not (computed from the table)", ""]
    ops_full = [(k, v) for k, v in table.items() if k[0] == "ops" and k[2] == "cpp" and k[5] == "time_ms"]
    for k, cpp_row in sorted(ops_full):
        ref = table.get(("ops", k[1], "reference", k[3], k[4], "time_ms"))
        # 5% tolerance: closer than that is within this machine's run-to-run noise.
        if ref and float(cpp_row["p50"]) > 1.05 * float(ref["p50"]):
            lines.append(f"* ops: cpp is **slower** than reference for {k[1]} {k[4]} {k[3]} "
                         f"({float(cpp_row['p50']):.3f} vs {float(ref['p50']):.3f} ms{noisy(cpp_row, ref)}).")
    for k, cpp_row in sorted((k, v) for k, v in table.items() if k[0] == "steps" and k[2] == "cpp"):
        ref = table.get(("steps", k[1], "reference", k[3], k[4], k[5]))
        if not ref:
            continue
        a, b = float(cpp_row["p50"]), float(ref["p50"])
        if k[5] == "time_ms" and a > b * 1.05:
            lines.append(f"* steps: {k[4]} {k[1]}: cpp is **slower** than reference ({a:.1f} vs {b:.1f} ms, "
                         f"{a / b:.2f}x{noisy(cpp_row, ref)}).")
        if k[5] == "saved_MB" and a > b * 1.05:
            lines.append(f"* memory: {k[4]} {k[1]}: cpp saves **more** for backward than reference "
                         f"({a:.1f} vs {b:.1f} MB).")
    for k, v in sorted(rat.items()):
        if k[0] == "steps" and k[1] == "delta:train" and k[5] == "time_ms":
            verdict = "at or below" if v <= 2.7 * 1.1 else "above"
            den = table.get(("steps", "plain", "torch", k[3], k[4], "time_ms"))
            lines.append(f"* Δ-STN training step, {k[4]}, {k[2]}: {v:.2f}x plain ({verdict} SPEC §5's "
                         f"≈2.6–2.7x floor + 10%{noisy(table[k], den)}).")
    if len(lines) == 2:
        lines.append("* cpp is at least as fast as reference everywhere it was measured.")
    return lines + [""]


# --------------------------------------------------------------------------------------------- plots
def plot(rows: List[Row], directory: str = HERE) -> List[str]:
    """Bar charts of the ratios: ops (full mode) × floor; steps × plain. Returns the files written."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    table, rat = latest(rows), ratios(rows)
    written = []
    ops_keys = [k for k in rat if k[0] == "ops" and k[3] == "full" and k[5] == "time_ms"]
    if ops_keys:
        shapes = list(dict.fromkeys((k[1], k[4]) for k in ops_keys))     # in cases.py's order
        providers = sorted({k[2] for k in ops_keys}, key=lambda p: (p != "reference", p))
        fig, ax = plt.subplots(figsize=(10, 4.5))
        width = 0.8 / len(providers)
        for i, p in enumerate(providers):
            ax.bar([j + i * width for j in range(len(shapes))],
                   [rat.get(("ops", op, p, "full", s, "time_ms"), 0) for op, s in shapes], width, label=p)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_xticks([j + width * (len(providers) - 1) / 2 for j in range(len(shapes))])
        ax.set_xticklabels([f"{op.replace('stn_', '').replace('_dual', '')}\n{s}" for op, s in shapes], fontsize=7)
        ax.set_ylabel("time / GEMM-conv floor (fwd+bwd)")
        ax.set_title("Dual STN ops, Δ-STN response sub-step (CPU, interleaved medians)")
        ax.legend()
        fig.tight_layout()
        path = os.path.join(directory, "ops_ratio.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    step_keys = [k for k in rat if k[0] == "steps" and k[5] == "time_ms"]
    if step_keys:
        models = list(dict.fromkeys(k[4] for k in step_keys))
        providers = sorted({k[2] for k in step_keys}, key=lambda p: (p != "reference", p))
        fig, axes = plt.subplots(1, len(models), figsize=(5 * len(models), 4.5), squeeze=False)
        width = 0.8 / len(providers)
        for ax, model in zip(axes[0], models):
            for i, p in enumerate(providers):
                ax.bar([j + i * width for j in range(len(STEP_NAMES))],
                       [rat.get(("steps", n, p, "full", model, "time_ms"), 0) for n in STEP_NAMES], width, label=p)
            ax.axhline(1.0, color="k", lw=0.8, ls="--")
            ax.axhline(2.65, color="r", lw=0.8, ls=":", label="SPEC Δ-STN floor 2.65x")
            ax.set_xticks([j + width * (len(providers) - 1) / 2 for j in range(len(STEP_NAMES))])
            ax.set_xticklabels(STEP_NAMES, rotation=45, ha="right", fontsize=8)
            ax.set_title(model, fontsize=9)
            ax.set_ylabel("time / plain SGD step")
        axes[0][0].legend(fontsize=8)
        fig.tight_layout()
        path = os.path.join(directory, "steps_ratio.png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written


# ---------------------------------------------------------------------------------------------- main
MALLOC_NOTE = {
    "kept": "glibc's malloc set to keep freed memory for reuse (`fastdstn.train.allocator`, what `fastdstn train` "
            "does): without it a step's large tensors are mapped afresh every time and their page faults (~0.35 ms "
            "per MB on this VM) swamp the small ops; `--default-malloc` measures with glibc's defaults.",
    "default": "glibc's malloc with its defaults (`--default-malloc`, or not glibc).",
}


def run(args) -> List[Row]:
    """Measure the requested suites and return the rows (no files written)."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    device = torch.device(args.device)
    backends_ = cases.device_backends(device)
    info = machine_info(device)
    info["malloc"] = "kept" if not args.default_malloc and keep_freed_memory() else "default"
    info["cpu_isa"] = cpp.CPU_ISA or "none"
    info["small_gemm"] = "on" if cpp.SMALL_GEMM else "off"
    log = (lambda msg: print(msg, flush=True)) if not args.silent else (lambda msg: None)
    log(f"# {info['cpu']}, {info['threads']} threads, torch {info['torch']}, backends {', '.join(backends_)}"
        f"{' (quick)' if args.quick else ''}")
    # --smoke: one round of tiny shapes and the small workloads, to test this script's plumbing.
    scale = 0.0 if args.smoke else 0.15 if args.quick else 1.0
    min_rounds = 1 if args.smoke else 3 if args.quick else None
    rows: List[Row] = []
    start = time.perf_counter()
    if "ops" in args.suites:
        # ~10 s per shape in a full run (6 shapes, 3 providers each), at least 8 rounds.
        shapes = dict(linear_shapes=[(8, 16, 16)], conv_shapes=[(2, 1, 4, 8, 5, 2, False), (2, 3, 4, 8, 3, 1, True)]) \
            if args.smoke else {}
        rows += run_ops(info, device, backends_, 10.0 * scale, 1 if args.smoke else 5 if args.quick else 8, 200, log,
                        **shapes)
        log(f"# ops done in {time.perf_counter() - start:.0f} s")
    if "steps" in args.suites:
        # ~45 s per model in a full run; a round of 15 steps takes 4 s (MLP) to 16 s (LSTM) on the busy
        # machine, so the big models get fewer rounds, but never fewer than min_rounds.
        rows += run_steps(info, device, backends_, args.models, 45.0 * scale, min_rounds or 5, 60, log,
                          small=args.smoke)
        log(f"# steps done in {time.perf_counter() - start:.0f} s")
    return rows


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="~15%% of the time budget, fewer minimum rounds")
    p.add_argument("--smoke", action="store_true", help="tiny shapes, one round: checks the script, measures nothing")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu or cuda (CUDA adds the triton backend and peak memory)")
    p.add_argument("--suites", default="ops,steps", type=lambda s: s.split(","))
    p.add_argument("--models", default="mlp,cnn,lstm", type=lambda s: s.split(","))
    p.add_argument("--csv", default=RESULTS_CSV)
    p.add_argument("--md", default=RESULTS_MD)
    p.add_argument("--append", action="store_true", help="keep the CSV's older rows (reports use the newest)")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--render-only", action="store_true", help="only regenerate RESULTS.md and plots from --csv")
    p.add_argument("--silent", action="store_true")
    p.add_argument("--default-malloc", action="store_true",
                   help="leave glibc's malloc at its defaults (the CLI keeps freed memory for reuse)")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    if not args.render_only:
        rows = run(args)
        write_csv(args.csv, rows, append=args.append)
    rows = read_csv(args.csv)
    directory = os.path.dirname(os.path.abspath(args.md))
    os.makedirs(directory, exist_ok=True)
    if not args.no_plots:
        plot(rows, directory)
    with open(args.md, "w") as f:
        f.write(render_markdown(rows, directory=directory))
    print(f"wrote {args.csv} and {args.md}")


if __name__ == "__main__":
    main()
