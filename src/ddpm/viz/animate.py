"""Animations of the reverse process (Algorithm 2 run forwards in time): GIF always, MP4 if possible."""

from __future__ import annotations

import shutil
import subprocess
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont
from torch import Tensor

from ddpm.viz.grid import check_images, make_grid, scale_for, upscale_nearest
from ddpm.viz.process import TrajectoryLike

NO_ENCODER_MESSAGE = "MP4 skipped: no video encoder found (put ffmpeg on PATH or pip install imageio-ffmpeg)"


def _caption(frame: np.ndarray, text: str) -> np.ndarray:
    """Append a white band with ``text`` under an RGB frame."""
    band = max(14, frame.shape[0] // 12)
    image = Image.new("RGB", (frame.shape[1], frame.shape[0] + band), "white")
    image.paste(Image.fromarray(frame), (0, 0))
    font = ImageFont.load_default(size=int(band * 0.75))
    ImageDraw.Draw(image).text((4, frame.shape[0] + band // 2), text, fill="black", font=font, anchor="lm")
    return np.asarray(image)


def reverse_frames(
    trajectory: Sequence[TrajectoryLike],
    *,
    final: Tensor | None = None,
    nrow: int | None = None,
    scale: int | None = None,
    max_images: int = 64,
    show_x0_pred: bool = False,
    label: bool = True,
) -> list[np.ndarray]:
    """One uint8 RGB frame (H, W, 3) per recorded step, plus one for ``final`` samples if given.

    Each frame is a grid of the first ``max_images`` x_t (and, with ``show_x0_pred``, the grid of x̂₀
    beside it), upscaled by nearest neighbour; ``label`` writes the paper step under the grid.
    """
    if not trajectory:
        raise ValueError("trajectory is empty; record at least one sampler step")
    frames_x = [(f"t = {s.t + 1}", s.x_t, s.x0_pred) for s in trajectory]
    if final is not None:
        frames_x.append(("t = 0 (samples)", final, final))
    frames = []
    for text, x_t, x0_pred in frames_x:
        grid = make_grid(check_images(x_t, "x_t")[:max_images], nrow=nrow)
        if show_x0_pred:
            pred = make_grid(check_images(x0_pred, "x0_pred")[:max_images].clamp(-1, 1), nrow=nrow)
            gap = np.full((grid.shape[0], 4, grid.shape[2]), 255, np.uint8)
            grid = np.concatenate([grid, gap, pred], axis=1)
        scale = scale_for(grid) if scale is None else scale
        rgb = np.repeat(grid, 3, axis=2) if grid.shape[2] == 1 else grid
        frame = upscale_nearest(rgb, scale)
        frames.append(_caption(frame, text) if label else frame)
    return frames


def save_reverse_gif(
    trajectory: Sequence[TrajectoryLike],
    path: str | Path,
    *,
    final: Tensor | None = None,
    frame_ms: int = 80,
    hold_ms: int = 1500,
    **frame_options,
) -> Path:
    """Write the reverse process as a looping GIF: one frame per step, the last held ``hold_ms``.

    ``frame_options`` go to :func:`reverse_frames`. Pillow merges identical consecutive frames, so a
    GIF without labels can have fewer frames when the picture stops changing.
    """
    if frame_ms < 1 or hold_ms < 1:
        raise ValueError(f"frame_ms={frame_ms} and hold_ms={hold_ms} must both be ≥ 1")
    frames = [Image.fromarray(f) for f in reverse_frames(trajectory, final=final, **frame_options)]
    durations = [frame_ms] * (len(frames) - 1) + [hold_ms]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)
    return path


def find_video_encoder() -> str | None:
    """Path of an ffmpeg executable: on PATH, else the one bundled with imageio-ffmpeg, else None."""
    found = shutil.which("ffmpeg")
    if found:
        return found
    try:
        import imageio_ffmpeg  # optional
    except ImportError:
        return None
    return imageio_ffmpeg.get_ffmpeg_exe()


def save_reverse_mp4(
    trajectory: Sequence[TrajectoryLike],
    path: str | Path,
    *,
    final: Tensor | None = None,
    fps: int = 12,
    hold_s: float = 1.5,
    **frame_options,
) -> Path | None:
    """Write the reverse process as an MP4 with ffmpeg; without an encoder, warn and return None."""
    if fps < 1 or hold_s < 0:
        raise ValueError(f"fps={fps} must be ≥ 1 and hold_s={hold_s} ≥ 0")
    encoder = find_video_encoder()
    if encoder is None:
        warnings.warn(NO_ENCODER_MESSAGE, stacklevel=2)
        return None
    frames = reverse_frames(trajectory, final=final, **frame_options)
    frames += [frames[-1]] * round(hold_s * fps)
    # H.264 in yuv420p needs even sides: pad with white.
    h, w = frames[0].shape[0] + frames[0].shape[0] % 2, frames[0].shape[1] + frames[0].shape[1] % 2
    video = torch.full((len(frames), h, w, 3), 255, dtype=torch.uint8).numpy()
    for i, f in enumerate(frames):
        video[i, : f.shape[0], : f.shape[1]] = f
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    command = [
        encoder, "-y", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
        "-r", str(fps), "-i", "-", "-an", "-pix_fmt", "yuv420p", str(path),
    ]  # fmt: skip
    done = subprocess.run(command, input=video.tobytes(), capture_output=True, check=False)
    if done.returncode != 0:
        message = done.stderr.decode(errors="replace").strip().splitlines()
        raise RuntimeError(f"ffmpeg failed writing {path}: {message[-1] if message else done.returncode}")
    return path
