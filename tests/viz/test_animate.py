import os
import stat
import sys

import numpy as np
import pytest
from PIL import Image

from ddpm.viz import animate
from ddpm.viz.animate import reverse_frames, save_reverse_gif, save_reverse_mp4
from tests.viz.fakes import fake_images, fake_trajectory


def gif_frames(path):
    image = Image.open(path)
    frames, durations = [], []
    for i in range(image.n_frames):
        image.seek(i)
        frames.append(np.asarray(image.convert("RGB")))
        durations.append(image.info["duration"])
    return frames, durations


def test_gif_has_one_frame_per_recorded_step_and_holds_the_last(tmp_path):
    trajectory = fake_trajectory(fake_images(16), steps=6)
    path = save_reverse_gif(trajectory, tmp_path / "reverse.gif", frame_ms=50, hold_ms=900)
    frames, durations = gif_frames(path)
    assert len(frames) == 6
    assert durations == [50] * 5 + [900]
    assert all(f.shape == frames[0].shape and f.var() > 0 for f in frames)
    assert max(frames[0].shape[:2]) >= 256  # small images are upscaled


def test_gif_can_end_on_the_final_samples_and_show_x0_pred(tmp_path):
    images = fake_images(4, channels=3)
    trajectory = fake_trajectory(images, steps=3)
    plain = reverse_frames(trajectory, label=False, scale=4)
    both = reverse_frames(trajectory, label=False, scale=4, show_x0_pred=True)
    assert plain[0].shape[1] == 4 * 22 and both[0].shape[1] == 4 * (22 + 4 + 22)  # x_t grid, gap, x̂₀ grid
    frames, _ = gif_frames(save_reverse_gif(trajectory, tmp_path / "r.gif", final=images))
    assert len(frames) == 4


def test_frames_are_nearest_neighbour_upscaled():
    trajectory = fake_trajectory(fake_images(4), steps=2)
    (frame, _) = reverse_frames(trajectory, label=False, scale=5)
    assert frame.shape == (5 * 22, 5 * 22, 3)  # 2 × 2 images of 8 px, padding 2
    blocks = frame.reshape(22, 5, 22, 5, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every 5×5 block is one colour


def test_mp4_is_skipped_with_a_message_without_an_encoder(tmp_path, monkeypatch):
    monkeypatch.setattr(animate.shutil, "which", lambda name: None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)  # import fails
    with pytest.warns(UserWarning, match="MP4 skipped: no video encoder found"):
        assert save_reverse_mp4(fake_trajectory(fake_images(4), 3), tmp_path / "r.mp4") is None
    assert not (tmp_path / "r.mp4").exists()


def test_mp4_pipes_every_frame_to_ffmpeg(tmp_path, monkeypatch):
    """A stand-in ffmpeg that stores its stdin: the bytes are the raw frames, held frames included."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "ffmpeg"
    fake.write_text('#!/bin/sh\nfor last; do :; done\ncat > "$last"\n')
    fake.chmod(fake.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    trajectory = fake_trajectory(fake_images(4), steps=3)
    path = save_reverse_mp4(trajectory, tmp_path / "r.mp4", fps=10, hold_s=0.5)
    h, w, _ = reverse_frames(trajectory)[0].shape
    frames = 3 + 5  # recorded steps + half a second of the last one at 10 fps
    assert path.stat().st_size == frames * (h + h % 2) * (w + w % 2) * 3


def test_bad_animation_arguments_are_refused(tmp_path):
    trajectory = fake_trajectory(fake_images(4), steps=2)
    with pytest.raises(ValueError, match="trajectory is empty"):
        save_reverse_gif([], tmp_path / "x.gif")
    with pytest.raises(ValueError, match="frame_ms=0 and hold_ms=1500 must both be ≥ 1"):
        save_reverse_gif(trajectory, tmp_path / "x.gif", frame_ms=0)
    with pytest.raises(ValueError, match="fps=0 must be ≥ 1"):
        save_reverse_mp4(trajectory, tmp_path / "x.mp4", fps=0)
