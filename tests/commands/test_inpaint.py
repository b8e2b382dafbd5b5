"""`ddpm inpaint`: fills of the masked region that keep every known pixel, from a mask file or a name."""

from __future__ import annotations

import numpy as np
from PIL import Image

from ddpm.commands.inpaint import inpaint_to_files


def test_fills_keep_the_known_pixels(digits_run, user_files, tmp_path):
    pixels = np.asarray(Image.open(user_files["digit0"]))  # (8, 8) uint8
    for mask in (user_files["mask"], "top"):
        [out] = inpaint_to_files(digits_run, user_files["digit0"], mask, n=2, steps=10, jump_length=2,
                                 resamples=2, out=tmp_path / "p.npz", device="cpu")  # fmt: skip
        with np.load(out) as data:
            assert data["images"].shape == (2, 8, 8, 1)
            assert data["mask"][:4].all() and not data["mask"][4:].any()
            assert (data["images"][:, 4:, :, 0] == pixels[4:]).all()
    [png] = inpaint_to_files(digits_run, user_files["digit0"], "center", n=1, steps=5, jump_length=1,
                             resamples=1, out=tmp_path / "p.png", device="cpu")  # fmt: skip
    assert png.is_file()
