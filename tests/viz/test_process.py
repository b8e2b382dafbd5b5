import pytest
import torch

from ddpm.diffusion import make_schedule
from ddpm.viz.figures import figure_to_array
from ddpm.viz.process import (
    DEFAULT_FORWARD_STEPS,
    default_forward_steps,
    forward_strip,
    forward_trajectory,
    image_table,
    reverse_strip,
    reverse_table,
    scatter_limit,
    select_steps,
)
from tests.viz.fakes import fake_images, fake_points, fake_trajectory

SCHEDULE = make_schedule("linear", 1000)


def assert_picture(fig, min_width_px: int = 100) -> None:
    """Rendered at the figure's own size, and not blank."""
    pixels = figure_to_array(fig)
    width, height = fig.get_size_inches() * fig.dpi
    assert pixels.shape == (int(height), int(width), 3)
    assert pixels.shape[1] >= min_width_px and pixels.var() > 0


def test_forward_trajectory_starts_at_x0_and_is_reproducible():
    x0 = fake_images(3)
    states = forward_trajectory(x0, SCHEDULE, (0, 10, 1000), generator=torch.Generator().manual_seed(1))
    assert torch.equal(states[0], x0) and all(s.shape == x0.shape for s in states)
    again = forward_trajectory(x0, SCHEDULE, (0, 10, 1000), generator=torch.Generator().manual_seed(1))
    other = forward_trajectory(x0, SCHEDULE, (0, 10, 1000), generator=torch.Generator().manual_seed(2))
    assert all(torch.equal(a, b) for a, b in zip(states, again, strict=True))
    assert not torch.equal(states[2], other[2])


def test_forward_chain_has_the_marginals_of_eq_4():
    """x_t from the step-by-step chain (eq. 2) ~ N(√ᾱ_t x₀, (1 − ᾱ_t) I), ᾱ at index t − 1 (eq. 4)."""
    x0 = torch.full((5000, 2), 0.7)  # 10⁴ draws: standard errors ≈ 0.01 (mean), 1.4 % (variance)
    for t, state in zip((100, 400), forward_trajectory(x0, SCHEDULE, (100, 400)), strict=True):
        alpha_bar = SCHEDULE.alpha_bar[t - 1].item()
        assert state.mean().item() == pytest.approx(alpha_bar**0.5 * 0.7, abs=0.04)
        assert state.var().item() == pytest.approx(1 - alpha_bar, rel=0.06)


def test_first_forward_step_uses_beta_1():
    """Paper step t = 1 is index 0: x₁ = √(1 − β₁) x₀ + √β₁ ε."""
    x0 = fake_images(2)
    (x1,) = forward_trajectory(x0, SCHEDULE, (1,), generator=torch.Generator().manual_seed(3))
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
    beta_1 = SCHEDULE.betas[0].float()
    torch.testing.assert_close(x1, (1 - beta_1).sqrt() * x0 + beta_1.sqrt() * noise)


def test_default_steps_rescale_to_the_schedule_length():
    assert default_forward_steps(1000) == DEFAULT_FORWARD_STEPS
    assert default_forward_steps(100) == (0, 5, 10, 25, 50, 75, 100)


@pytest.mark.parametrize("steps", [(0, 1001), (-1,), (2.5,)])
def test_forward_trajectory_rejects_steps_outside_the_chain(steps):
    with pytest.raises(ValueError, match=r"is outside 0\.\.1000"):
        forward_trajectory(fake_images(1), SCHEDULE, steps)


def test_forward_trajectory_rejects_no_steps():
    with pytest.raises(ValueError, match="steps is empty"):
        forward_trajectory(fake_images(1), SCHEDULE, ())


def test_forward_strip_of_images_has_one_row_per_image_and_a_column_per_step():
    table = image_table(torch.stack(forward_trajectory(fake_images(3), SCHEDULE), 1), ["a"] * 7)
    assert table.pixels.shape == (3 * 9 + 1, 7 * 9 + 1, 1)
    fig = forward_strip(fake_images(8, channels=3), SCHEDULE, max_images=4)
    assert_picture(fig)
    assert [t.get_text() for t in fig.axes[0].get_xticklabels()] == [
        f"t = {s}" for s in DEFAULT_FORWARD_STEPS
    ]


def test_forward_strip_of_points_is_a_row_of_scatter_plots():
    fig = forward_strip(fake_points(), SCHEDULE, (0, 100, 1000))
    assert len(fig.axes) == 3 and [ax.get_title() for ax in fig.axes] == ["t = 0", "t = 100", "t = 1000"]
    assert_picture(fig)


def test_select_steps_keeps_the_ends():
    trajectory = fake_trajectory(fake_images(2), steps=20)
    chosen = select_steps(trajectory, 7)
    assert len(chosen) == 7 and chosen[0] is trajectory[0] and chosen[-1] is trajectory[-1]
    assert select_steps(trajectory[:3], 7) == trajectory[:3]
    with pytest.raises(ValueError, match="trajectory is empty"):
        select_steps([], 7)
    with pytest.raises(ValueError, match="max_columns=0 must be ≥ 1"):
        select_steps(trajectory, 0)


def test_reverse_strip_of_images_shows_x_t_over_x0_pred():
    trajectory = fake_trajectory(fake_images(4), steps=5)
    table = reverse_table(trajectory, max_images=2)
    assert table.pixels.shape[:2] == (4 * 9 + 1, 5 * 9 + 1)  # rows x_t, x̂₀ for each of two images
    assert table.row_labels == ("xₜ", "x̂₀", "xₜ", "x̂₀")
    assert table.col_labels == ("t = 1000", "t = 750", "t = 501", "t = 251", "t = 1")  # paper steps
    assert_picture(reverse_strip(trajectory))


def test_reverse_strip_of_points_has_two_rows_of_scatter_plots():
    fig = reverse_strip(fake_trajectory(fake_points(), steps=12), max_columns=6)
    assert len(fig.axes) == 12
    assert_picture(fig)


def test_reverse_strip_rejects_non_image_states():
    bad = [type("Step", (), {"t": 0, "x_t": torch.zeros(2, 5), "x0_pred": torch.zeros(2, 5)})()]
    with pytest.raises(ValueError, match=r"x_t must be \(N, C, H, W\)"):
        reverse_strip(bad)


def test_image_table_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"cells must be \(rows, columns, C, H, W\)"):
        image_table(fake_images(2))


def test_scatter_limit_holds_the_data_and_by_default_the_noise():
    points = fake_points()  # within about ±1.5
    tight = scatter_limit(points, floor=0.0)
    assert points.abs().max() * 0.9 < tight < 2.0
    assert scatter_limit(points) == 3.5
