import numpy as np
import pytest

from ddpm.rundir import RunDir
from ddpm.viz.curves import (
    ema_smooth,
    plot_eval_metrics,
    plot_quality_vs_steps,
    plot_training_curves,
    smoothing_decay,
)
from tests.viz.test_process import assert_picture


def test_ema_smooth_is_bias_corrected():
    assert ema_smooth([3.0, 3.0, 3.0], 0.9) == pytest.approx([3.0, 3.0, 3.0])  # no pull towards 0
    assert ema_smooth([1.0, 2.0, 5.0], 0.0) == pytest.approx([1.0, 2.0, 5.0])
    # s₂ = (0.5·0.5·1 + 0.5·3) / (0.5·0.5 + 0.5) with decay 0.5
    assert ema_smooth([1.0, 3.0], 0.5)[1] == pytest.approx((0.25 * 1 + 0.5 * 3) / 0.75)
    with pytest.raises(ValueError, match=r"decay=1\.0 must be in \[0, 1\)"):
        ema_smooth([1.0], 1.0)


def test_training_curves_have_four_panels(run_dir):
    records = RunDir(run_dir).log_records()
    fig = plot_training_curves(records)
    assert_picture(fig)
    loss_ax = fig.axes[0]
    raw, smooth = loss_ax.get_lines()
    assert np.allclose(raw.get_ydata(), [r["loss"] for r in records])
    losses = [r["loss"] for r in records]
    assert np.allclose(smooth.get_ydata(), ema_smooth(losses, smoothing_decay(len(losses))))
    assert [ax.get_ylabel() for ax in fig.axes] == ["loss", "learning rate", "gradient norm", "images / s"]


def test_training_curves_tolerate_missing_series():
    fig = plot_training_curves([{"step": 1, "loss": 0.3}, {"step": 2, "loss": 0.2}])
    assert fig.axes[1].texts[0].get_text() == "no learning rate"
    with pytest.raises(ValueError, match="no 'loss' values in the log"):
        plot_training_curves([{"step": 1, "lr": 0.1}])


def test_eval_metrics_get_one_panel_each(run_dir):
    fig = plot_eval_metrics(RunDir(run_dir).eval_records())
    assert [ax.get_ylabel() for ax in fig.axes] == ["fid", "accuracy"]
    assert_picture(fig)
    with pytest.raises(ValueError, match="no metrics in the eval records"):
        plot_eval_metrics([{"step": 3}])


def test_quality_against_sampler_steps():
    fig = plot_quality_vs_steps({"ddpm": {1000: 4.0}, "ddim": {50: 9.0, 10: 20.0}}, "FID")
    ax = fig.axes[0]
    assert ax.get_xscale() == "log" and ax.get_ylabel() == "FID"
    assert list(ax.get_lines()[1].get_xdata()) == [10, 50]  # sorted by steps
    assert_picture(fig)
    with pytest.raises(ValueError, match="results is empty"):
        plot_quality_vs_steps({})


def test_smoothing_window_shrinks_for_short_logs():
    assert smoothing_decay(10_000) == 0.98
    assert smoothing_decay(60) == pytest.approx(1 - 10 / 60)
    assert smoothing_decay(5) == 0.0
