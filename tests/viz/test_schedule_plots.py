import numpy as np
import pytest

from ddpm.diffusion import make_schedule
from ddpm.viz.schedule_plots import plot_schedules
from tests.viz.test_process import assert_picture


def test_schedule_plot_has_beta_alpha_bar_and_log_snr_per_schedule():
    fig = plot_schedules(("linear", "cosine", "sigmoid"), num_steps=200)
    assert_picture(fig)
    beta_ax, alpha_ax, snr_ax = fig.axes
    assert [ax.get_ylabel() for ax in fig.axes] == ["β(t)", "ᾱ(t)", "log SNR(t)"]
    assert len(alpha_ax.get_lines()) == 3
    cosine = make_schedule("cosine", 200)
    line = alpha_ax.get_lines()[1]
    assert np.allclose(line.get_xdata(), np.arange(1, 201))  # paper steps
    assert np.allclose(line.get_ydata(), cosine.alpha_bar.numpy())
    assert np.allclose(snr_ax.get_lines()[1].get_ydata(), np.log(cosine.snr.numpy()))
    assert beta_ax.get_yscale() == "log"


def test_schedule_plot_accepts_built_schedules_and_one_name():
    assert len(plot_schedules({"mine": make_schedule("linear", 50)}).axes[0].get_lines()) == 1
    assert len(plot_schedules("cosine", 50).axes[0].get_lines()) == 1


def test_schedule_plot_refuses_unknown_or_no_schedules():
    with pytest.raises(ValueError, match="unknown schedule 'quadratic'"):
        plot_schedules(["quadratic"])
    with pytest.raises(ValueError, match="schedules is empty"):
        plot_schedules([])
