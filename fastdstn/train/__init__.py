"""Training: the loop (Trainer), checkpoints, records, plots and replay."""
from .checkpoint import CheckpointError
from .replay import Schedule
from .rundir import RunDirectoryError
from .trainer import Diverged, Interrupted, Position, Trainer, config_from_run

__all__ = ["Trainer", "Schedule", "CheckpointError", "RunDirectoryError", "Interrupted", "Diverged", "Position",
           "plot_run", "config_from_run", "replay"]


def plot_run(run_dir: str, out=None) -> str:
    """Write the schedule and loss-curve PNG of a run directory (matplotlib is imported only here,
    so that importing fastdstn never switches a notebook's matplotlib backend)."""
    from .plot import plot_run as _plot_run

    return _plot_run(run_dir, out)


def replay(run_dir: str, out_dir=None, *, epochs=None, device=None, progress: bool = True, overwrite: bool = False):
    """Plain training (mode fixed) of the run's network that follows its recorded schedule; returns
    the summary. Defaults: as many epochs as the run completed, output in RUN_DIR/replay (overwrite:
    replace an earlier replay there)."""
    import os

    from ..config import from_dict
    from .records import read_csv

    config = config_from_run(run_dir)
    values = config.to_dict()
    values["train"]["mode"] = "fixed"
    values["train"]["response_lr"] = None      # mode fixed has no response optimizer
    done = len(read_csv(os.path.join(run_dir, "metrics.csv"))) if os.path.exists(
        os.path.join(run_dir, "metrics.csv")) else config.train.epochs
    values["train"]["epochs"] = max(done, 1) if epochs is None else epochs
    if device is not None:
        values["train"]["device"] = device
    values["name"] = f"{config.name}-replay"
    config = from_dict(values)
    trainer = Trainer(config, out_dir or os.path.join(run_dir, "replay"), progress=progress, replay=None)
    trainer.replay = Schedule.from_run(run_dir, trainer.names)
    return trainer.fit(overwrite=overwrite)
