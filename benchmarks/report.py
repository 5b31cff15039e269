"""Render benchmarks/results.csv: benchmarks/RESULTS.md and the ratio plots. Measures nothing.

    python benchmarks/report.py                  # RESULTS.md and ops_ratio.png / steps_ratio.png from results.csv
    python benchmarks/report.py --csv /tmp/r.csv --md /tmp/R.md --no-plots
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
from typing import List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cases  # noqa: E402
from results import RESULTS_CSV, Row, latest, ratios, read_csv  # noqa: E402

RESULTS_MD = os.path.join(HERE, "RESULTS.md")
STEP_NAMES = [name for name, *_ in cases.STEPS]


MALLOC_NOTE = {
    "kept": "glibc's malloc set to keep freed memory for reuse (`fastdstn.train.allocator`, what `fastdstn train` "
            "does): without it a step's large tensors are mapped afresh every time and their page faults swamp the "
            "small ops (`python benchmarks/bench_cpu_env.py malloc` measures it); `--default-malloc` measures with "
            "glibc's defaults.",
    "default": "glibc's malloc with its defaults (`--default-malloc`, or not glibc).",
}


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
           f"Measured by `{command}` into `benchmarks/results.csv`, rendered by `python benchmarks/report.py` "
           f"(do not edit by hand). Regression guard: "
           f"`python benchmarks/compare.py` (ratios against this CSV, threshold 15%).", "",
           f"* Machine: device `{any_row['device']}`, CPU `{any_row['cpu']}`, {any_row['threads']} torch threads; "
           f"torch {any_row['torch']}, fastdstn {any_row['fastdstn']} (cpp CPU loops: "
           f"{any_row.get('cpu_isa') or 'unrecorded'}; small-batch GEMM kernel: "
           f"{any_row.get('small_gemm') or 'unrecorded'}); measured {stamps[0]} – {stamps[-1]}.",
           f"* Allocator: {MALLOC_NOTE.get(any_row.get('malloc') or 'default', any_row.get('malloc'))}",
           "* **Noise.** The machine's 1-min load average during the run was "
           f"{load_txt} (recorded per row): when other jobs share the cores, absolute milliseconds are inflated "
           "and jumpy. Every provider of a case ran in one process on the same inputs, interleaved round by round "
           "in a rotating order, so a slowdown hits all of them alike: read the **ratios** (× floor, × plain), "
           "not the milliseconds. p20–p80 spreads show how noisy each number is."]
    if any_row["device"] == "cpu":
        out.append("* Device cpu: no GPU number appears here (the Triton backend is CUDA-only).")
    out.append("")

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
                "The floor of docs/METHOD.md §5 for the Δ-STN training step is ≈ 2.6–2.7x plain (8 weight GEMMs "
                "per layer against 3).", ""]
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
    for suite, (title, note) in SUITES.items():
        out += suite_section(table, suite, title, note)
    out += observations(table, rat)
    out += time_to_quality_section(directory)
    plots = [p for p in ("ops_ratio.png", "steps_ratio.png") if os.path.exists(os.path.join(directory, p))]
    if plots:
        out += ["## Plots", ""] + [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


# The suites of the benchmarks of one subject (they append to results.csv): title and what their rows measure.
SUITES = {
    "ops_cpp": ("Compiled ops against the reference and the GEMM floor",
                "`python benchmarks/bench_ops_cpp.py`: each dual op's forward plus Δ-STN's response-sub-step "
                "backward (grads of ẋ, W_r, b_r, V), per provider on the same inputs, interleaved. mm-floor = the "
                "bare torch.mm calls of the same shapes (linear only). dropout_dual: channel dropout forward and "
                "backward w.r.t. x and ẋ; mul-floor = the bare multiplies by a broadcast mask. max_pool2d_dual: the dual "
                "pass's max pooling with its tangent, forward and backward w.r.t. ẋ; fwAD = PyTorch's forward-mode "
                "rule of F.max_pool2d and its backward. weight_penalty: the "
                "response sub-step's tuned L2 penalty and its gradient over ResNet-18's STN layers, its compiled "
                "passes against the reference's ATen expressions. time_ratio = median of the per-round ratios to "
                "mm-floor (linear) or to cpp (the others)."),
    "attention": ("attention_dual: dual forward and tangent-path backward",
                  "`python benchmarks/bench_attention.py [--gpu] [--block-sweep] [--routing-overhead]`: (O, Ȯ) and "
                  "the gradients of a loss on Ȯ w.r.t. (q̇, k̇, v̇) per provider (dual / triton: fastdstn; "
                  "fwAD-math: forward-mode AD through PyTorch's math SDPA kernel; sdpa / sdpa-flash: plain attention "
                  "training, for scale). peak_MB: the bytes allocated during one forward + backward above what "
                  "existed before it. time_ratio: median of per-round ratios to sdpa (sdpa-flash on a GPU); "
                  "block_sweep: the reference's query rows per block; routing: Δ-STN steps of models without "
                  "attention with dual_routes() on and off (ratio on / off)."),
    "augment": ("Batched per-example augmentation against per-image torchvision v2",
                "`python benchmarks/bench_augment.py`: one batch of 3×32×32 images, every image with its own "
                "magnitudes; mode = torch threads. time_ms per batch; time_ratio = median of per-round ratios to "
                "the cold batched call (the speed-up of batched), time_ratio_warm to the back-to-back batched call; "
                "images_per_s at the round times' p80/p50/p20."),
}


def _cell(row: Optional[Row]) -> str:
    if row is None:
        return "–"
    p20, p50, p80 = (float(row[k]) for k in ("p20", "p50", "p80"))
    return f"{p50:.4g}" if p20 == p50 == p80 else f"{p50:.4g} ({p20:.4g}–{p80:.4g})"


def suite_section(table, suite: str, title: str, note: str) -> List[str]:
    """One table of a suite's newest rows: a line per (op, shape, mode, provider), a column per metric (median,
    p20–p80), with the machine and time they were measured on."""
    rows = [r for r in table.values() if r["suite"] == suite]
    if not rows:
        return []
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    lines = list(dict.fromkeys((r["op"], r["shape"], r["mode"], r["provider"]) for r in rows))
    stamps = sorted(r["timestamp"] for r in rows)
    first = rows[0]
    out = [f"## {title}", "", note, "",
           f"Device `{first['device']}`, CPU `{first['cpu']}`, {first['threads']} torch threads, torch "
           f"{first['torch']}; measured {stamps[0]} – {stamps[-1]}.", "",
           "| op | shape | mode | provider | " + " | ".join(metrics) + " |", "|" + "---|" * (4 + len(metrics))]
    for op, shape, mode, provider in lines:
        cells = [_cell(table.get((suite, op, provider, mode, shape, m))) for m in metrics]
        out.append(f"| {op} | {shape} | {mode} | {provider} | " + " | ".join(cells) + " |")
    return out + [""]


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
           "wall-clock T times the budget column. Best validation loss and the test loss of that model; lower is "
           "better. Hyperparameters: where Δ-STN's schedule ended, and the best trial of a study at its full budget.",
           "",
           "| preset | settings | epochs | seed | method | budget | runs | wall s | best val | test of best | "
           "hyperparameters | measured |",
           "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['preset']} | {r.get('settings') or '–'} | {r['epochs']} | {r['seed']} | {r['method']} | "
                   f"{r.get('budget_x') or 1}×T | "
                   f"{r['runs']} | "
                   f"{float(r['wall_time_s']):.1f} | {float(r['best_val_loss']):.4f} | "
                   f"{float(r['best_test_loss']):.4f} | {r.get('hypers') or '–'} | {r['timestamp']} |")
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
        # 5% tolerance: closer than that is within run-to-run noise on a shared machine.
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
            lines.append(f"* Δ-STN training step, {k[4]}, {k[2]}: {v:.2f}x plain ({verdict} docs/METHOD.md §5's "
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
            ax.axhline(2.65, color="r", lw=0.8, ls=":", label="Δ-STN floor 2.65x (docs/METHOD.md §5)")
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


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--csv", default=RESULTS_CSV)
    p.add_argument("--md", default=RESULTS_MD)
    p.add_argument("--no-plots", action="store_true")
    return p


def main(argv: Optional[List[str]] = None) -> None:
    args = parser().parse_args(argv)
    rows = read_csv(args.csv)
    directory = os.path.dirname(os.path.abspath(args.md))
    os.makedirs(directory, exist_ok=True)
    if not args.no_plots:
        plot(rows, directory)
    with open(args.md, "w") as f:
        f.write(render_markdown(rows, directory=directory))
    print(f"wrote {args.md}")


if __name__ == "__main__":
    main()
