"""The `fastdstn` command: train, tune, replay, plot, info, presets.

    fastdstn train fmnist-quick --out runs/fmnist-quick
    fastdstn train my.toml --mode centered --epochs 20 --set train.lr=0.05 --set hypers.dropout_in.init=0.1
    fastdstn train --out runs/fmnist-quick --resume
    fastdstn train fmnist-quick --out runs/fmnist-quick --overwrite
    fastdstn tune uci-linear --method tpe --trials 30 --budget-seconds 600
    fastdstn replay runs/fmnist-quick
    fastdstn plot runs/fmnist-quick
    fastdstn info
    fastdstn --version

Every error is one line on stderr and an exit status (docs/RUNS.md): 2 a configuration or argument, 3 the run
directory or its checkpoint, 4 divergence, 5 a file that cannot be read or written, 130 an interrupt; 1 an
unexpected error. --debug shows the traceback instead.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from typing import List, Optional, Tuple

from . import config as cfg

EXIT_INTERNAL, EXIT_CONFIG, EXIT_CHECKPOINT, EXIT_DIVERGED, EXIT_FILES, EXIT_INTERRUPTED = 1, 2, 3, 4, 5, 130


def _version() -> str:
    from . import __version__

    return __version__


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdstn", description="Self-Tuning Networks: train, tune, replay, plot.")
    debug = dict(action="store_true", help="on an error, show the Python traceback")
    parser.add_argument("--debug", **debug)
    parser.add_argument("--version", action="version", version=f"fastdstn {_version()}")
    common = argparse.ArgumentParser(add_help=False)    # --debug also after the command (SUPPRESS: keep the above)
    common.add_argument("--debug", default=argparse.SUPPRESS, **debug)
    sub = parser.add_subparsers(dest="command", required=True)

    def add(name: str, **kwargs) -> argparse.ArgumentParser:
        return sub.add_parser(name, parents=[common], **kwargs)

    train = add("train", help="train a preset or a config file (TOML or YAML)")
    train.add_argument("source", nargs="?", help=f"preset ({', '.join(cfg.presets())}) or config file; "
                                                 f"with --resume it may be omitted")
    train.add_argument("--mode", choices=cfg.MODES, help="delta (default), centered, stn or fixed")
    train.add_argument("--epochs", type=int, help="epochs in all (with --resume: the total to reach)")
    train.add_argument("--device", choices=("auto", "cpu", "cuda"))
    train.add_argument("--seed", type=int)
    train.add_argument("--out", help="run directory (default runs/NAME)")
    train.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    train.add_argument("--overwrite", action="store_true", help="replace the run in OUT (a non-empty OUT is "
                                                                "refused without --resume or --overwrite)")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. train.lr=0.05 or data.train_size=2000 (repeatable)")
    train.add_argument("--no-progress", action="store_true", help="no progress bars (one line per epoch only)")

    tune = add("tune", help="black-box baseline: Optuna search over the preset's hyperparameters")
    tune.add_argument("source", help="preset or config file whose space is searched")
    tune.add_argument("--method", choices=("random", "tpe", "gp"), default="tpe")
    tune.add_argument("--trials", type=int, default=20, help="trials in all (a resumed study counts those done)")
    tune.add_argument("--budget-seconds", type=float, help="stop starting trials after this much training time")
    tune.add_argument("--epochs", type=int, help="epochs per trial (default: the preset's)")
    tune.add_argument("--seed", type=int, default=0, help="sampler seed")
    tune.add_argument("--out", help="study directory (default runs/NAME-tune-METHOD); rerun to resume")
    tune.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    replay = add("replay", help="plain training that follows a run's recorded schedule")
    replay.add_argument("run_dir")
    replay.add_argument("--out", help="output directory (default RUN_DIR/replay)")
    replay.add_argument("--epochs", type=int, help="default: the epochs the run completed")
    replay.add_argument("--device", choices=("auto", "cpu", "cuda"))
    replay.add_argument("--overwrite", action="store_true", help="replace an earlier replay in OUT")
    replay.add_argument("--no-progress", action="store_true")

    plot = add("plot", help="write RUN_DIR/schedule.png (schedule and loss curves)")
    plot.add_argument("run_dir")
    plot.add_argument("--out", help="PNG path (default RUN_DIR/schedule.png)")

    add("info", help="versions, op backends and build metadata")
    add("presets", help="list the presets")
    return parser


def _report(summary: dict, out_dir: str) -> None:
    if int(os.environ.get("RANK", "0")) != 0:    # under torchrun, rank 0 speaks for the run
        return
    final = summary.get("final") or {}
    metric = next((k[4:] for k in final if k.startswith("val_") and k != "val_loss"), None)
    print(f"done in {summary['wall_time_s']:.1f}s ({summary['steps']} steps, {summary['hyper_steps']} hyper steps): "
          f"final val loss {final.get('val_loss', float('nan')):.4f}, test loss {final.get('test_loss', float('nan')):.4f}"
          + (f", val {metric} {final.get('val_' + metric):.4g}, test {metric} {final.get('test_' + metric):.4g}"
             if metric else ""))
    print(f"plot:    {os.path.join(out_dir, 'schedule.png')}")
    print(f"summary: {os.path.join(out_dir, 'summary.json')}")
    print(f"tensorboard --logdir {os.path.join(out_dir, 'tensorboard')}")


def _train(args) -> int:
    from .train import Trainer, config_from_run
    from .train.allocator import keep_freed_memory

    keep_freed_memory()

    options = {"mode": args.mode, "epochs": args.epochs, "device": args.device, "seed": args.seed}
    if args.source is None:
        if not (args.resume and args.out):
            raise cfg.ConfigError("train: name a preset or config file (or use --out DIR --resume)")
        values = config_from_run(args.out).to_dict()
        parsed = {tuple(k): v for k, v in map(cfg.parse_override, args.overrides)}
        parsed.update({("train", k): v for k, v in options.items() if v is not None})
        config = cfg.from_dict(cfg.apply_overrides(values, parsed))
    else:
        config = cfg.load(args.source, args.overrides, **options)
    out = args.out or os.path.join("runs", config.name)
    trainer = Trainer(config, out, progress=not args.no_progress and sys.stderr.isatty())
    summary = trainer.fit(resume=args.resume, overwrite=args.overwrite)
    _report(summary, out)
    return 0


def _tune(args) -> int:
    from .train.allocator import keep_freed_memory
    from .tune import tune

    keep_freed_memory()

    config = cfg.load(args.source, args.overrides)
    out = args.out or os.path.join("runs", f"{config.name}-tune-{args.method}")
    summary = tune(config, args.method, args.trials, out, budget_seconds=args.budget_seconds, epochs=args.epochs,
                   seed=args.seed)
    print(json.dumps(summary, indent=2))
    print(f"trajectory: {os.path.join(out, 'trajectory.csv')}")
    return 0


def _replay(args) -> int:
    from .train import replay

    out = args.out or os.path.join(args.run_dir, "replay")
    summary = replay(args.run_dir, out, epochs=args.epochs, device=args.device, overwrite=args.overwrite,
                     progress=not args.no_progress and sys.stderr.isatty())
    _report(summary, out)
    return 0


def _plot(args) -> int:
    from .train import plot_run

    print(plot_run(args.run_dir, args.out))
    return 0


def _info(_args) -> int:
    import numpy
    import torch
    import torchvision

    from . import __version__, ops

    print(f"fastdstn     {__version__}")
    print(f"python       {platform.python_version()} ({platform.machine()})")
    print(f"torch        {torch.__version__} (CUDA build {torch.version.cuda}, cuda available: "
          f"{torch.cuda.is_available()}{', ' + torch.cuda.get_device_name() if torch.cuda.is_available() else ''})")
    print(f"torchvision  {torchvision.__version__}")
    print(f"numpy        {numpy.__version__}")
    try:
        import triton

        print(f"triton       {triton.__version__}")
    except ImportError:
        print("triton       not installed")
    print(f"threads      {torch.get_num_threads()}")
    print("op backends:")
    for name, state in ops.available().items():
        print(f"  {name:10s} {state}")
    from .ops import cpp

    if cpp.CPU_ISA:
        print(f"cpu loops    {cpp.CPU_ISA} (the widest build this CPU runs; FASTDSTN_CPU_ISA=baseline|avx2 caps it)")
        if cpp.SMALL_GEMM:
            print("linear GEMMs AVX-512 kernel for batches (or widths) <= 64, else ATen (FASTDSTN_SMALL_GEMM=0: ATen)")
        else:
            print("linear GEMMs ATen (the small-batch kernel needs the AVX-512 loops and FASTDSTN_SMALL_GEMM != 0)")
    path = os.path.join(os.path.dirname(__file__), "_build_info.json")
    print("build info (fastdstn/_build_info.json):")
    if os.path.exists(path):
        with open(path) as f:
            for key, value in json.load(f).items():
                print(f"  {key}: {value}")
    else:
        print("  missing (pure-Python install)")
    return 0


def _presets(_args) -> int:
    for name in cfg.presets():
        values = cfg.read_source(name)
        print(f"{name:18s} {values.get('train', {}).get('mode', 'delta'):8s} {values.get('model', {}).get('name', '')}"
              f" on {values.get('data', {}).get('name', '')}")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    command = {"train": _train, "tune": _tune, "replay": _replay, "plot": _plot, "info": _info, "presets": _presets}[args.command]
    try:
        return command(args)
    except BaseException as err:    # noqa: B902 - every error becomes one line and an exit status
        if args.debug or isinstance(err, SystemExit):
            raise
        status, line = _error_line(err)
        print(f"fastdstn: {line}", file=sys.stderr)
        return status


def _error_line(err: BaseException) -> Tuple[int, str]:
    """The exit status and the one line that say what went wrong."""
    from .extras import MissingExtra
    from .train import CheckpointError, Diverged, Interrupted, RunDirectoryError

    if isinstance(err, cfg.ConfigError):
        return EXIT_CONFIG, f"config error: {err}"
    if isinstance(err, MissingExtra):
        return EXIT_CONFIG, str(err)
    if isinstance(err, (CheckpointError, RunDirectoryError)):
        return EXIT_CHECKPOINT, str(err)
    if isinstance(err, Diverged):
        return EXIT_DIVERGED, f"diverged: {err}"
    if isinstance(err, Interrupted):
        return EXIT_INTERRUPTED, f"interrupted by {err}"
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, ("stopped by an interrupt; what was written is whole: a run continues from its "
                                  "last checkpoint with --resume, a study by running tune again")
    if isinstance(err, FileNotFoundError):
        return EXIT_CONFIG, str(err)
    if isinstance(err, OSError):
        where = f" ({err.filename})" if err.filename else ""
        return EXIT_FILES, f"cannot read or write a file{where}: {err.strerror or err}"
    return EXIT_INTERNAL, (f"unexpected error: {type(err).__name__}: {' '.join(str(err).split())} (run with --debug "
                           f"for the traceback)")
