"""schedule.png: the loss and metric panels, and each hyperparameter's schedule with its starting value and its σ
band c(λ ± σ). The figure's artists are counted (lines by label, fill_between collections), not its pixels."""
import os

import matplotlib.pyplot as plt
import pytest
import torch
from matplotlib.collections import PolyCollection

from fastdstn import Hyper
from fastdstn.train import Trainer, replay
from fastdstn.train.plot import hyper_names, schedule_figure, sigma_band
from fastdstn.train.records import read_csv

from tiny_runs import tiny_config


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("plot") / "run"
    Trainer(tiny_config(), str(out), progress=False).fit()
    return str(out)


def recorded_names(run):
    return hyper_names(read_csv(os.path.join(run, "schedule.csv")))


def labels(ax):
    return [line.get_label() for line in ax.lines if not line.get_label().startswith("_")]


def bands(ax):
    return [c for c in ax.collections if isinstance(c, PolyCollection)]


def test_the_plot_has_loss_metric_and_one_panel_per_hyperparameter(run_dir):
    names = recorded_names(run_dir)
    fig = schedule_figure(run_dir)
    try:
        panels = [ax for ax in fig.axes if ax.axison]
        assert [ax.get_title() for ax in panels] == ["loss", "accuracy", *names]
        loss, metric, *hypers = panels
        assert {"train (epoch end)", "val (epoch end)", "test (epoch end)"} <= set(labels(loss))
        assert labels(metric) == ["val (epoch end)", "test (epoch end)"]
        assert all(len(line.get_xdata()) == 2 for line in metric.lines if not line.get_label().startswith("_"))
        for ax in hypers:
            assert labels(ax)[0] == "value" and labels(ax)[1].startswith("start ")
            assert len(bands(ax)) == 1 and bands(ax)[0].get_label() == "c(λ ± σ)"
    finally:
        plt.close(fig)
    assert os.path.getsize(os.path.join(run_dir, "schedule.png")) > 0


def test_the_band_holds_the_schedule(run_dir):
    names = recorded_names(run_dir)
    fig = schedule_figure(run_dir)
    try:
        for ax in [ax for ax in fig.axes if ax.get_title() in names]:
            value = ax.lines[0].get_ydata()
            vertices = bands(ax)[0].get_paths()[0].vertices
            assert vertices[:, 1].min() <= min(value[1:]) and max(value[1:]) <= vertices[:, 1].max()
    finally:
        plt.close(fig)


def test_sigma_band_is_the_transformed_range_of_lambda_plus_minus_sigma():
    rate = Hyper("drop", 0.5, 0.0, 1.0)
    low, high = sigma_band(rate, 0.5, 1.0)
    assert low == pytest.approx(float(torch.sigmoid(torch.tensor(-1.0)))) and high == pytest.approx(1 - low)
    near_bound = sigma_band(rate, 0.95, 1.0)        # the sigmoid flattens: less room above than below
    assert near_bound[1] - 0.95 < 0.95 - near_bound[0]
    positive = Hyper("wd", 1e-3, low=0.0)
    assert sigma_band(positive, 1e-3, 0.0) == pytest.approx((1e-3, 1e-3))
    assert sigma_band(Hyper("shift", 0.0), 2.0, 0.5) == pytest.approx((1.5, 2.5))


def test_a_replay_plot_has_the_schedule_and_no_band(run_dir, tmp_path):
    out = str(tmp_path / "replay")
    replay(run_dir, out, progress=False)
    names = recorded_names(out)
    fig = schedule_figure(out)
    try:
        hypers = [ax for ax in fig.axes if ax.get_title() in names]
        assert len(hypers) == len(names) > 0
        for ax in hypers:
            assert labels(ax)[0] == "value" and labels(ax)[1].startswith("start ") and not bands(ax)
    finally:
        plt.close(fig)
