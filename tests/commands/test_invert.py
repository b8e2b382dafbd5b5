"""`ddpm invert`: latents, reconstructions and their error in one .npz, and the optional figure."""

from __future__ import annotations

import numpy as np
import torch

from ddpm.commands.invert import invert_to_files
from ddpm.data.user_images import load_images
from ddpm.editing import reconstruct
from ddpm.model import load, to_uint8


def test_invert_writes_latents_reconstructions_and_their_error(digits_run, user_files, tmp_path):
    files = [user_files["digit0"], user_files["digit1"]]
    latents, figure = invert_to_files(digits_run, files, steps=5, out=tmp_path / "lat.npz",
                                      figure=tmp_path / "rec.png", device="cpu")  # fmt: skip
    model = load(digits_run)
    originals = load_images(files, model.sample_shape)
    expected_latents, rebuilt = reconstruct(model, originals, steps=5)
    with np.load(latents) as data:
        assert data["latents"].shape == (2, 1, 8, 8) and data["latents"].dtype == np.float32
        torch.testing.assert_close(torch.from_numpy(data["latents"]), expected_latents, rtol=0, atol=1e-5)
        assert np.array_equal(data["reconstructions"], to_uint8(rebuilt))
        expected_mse = (rebuilt - originals).pow(2).flatten(1).mean(1).numpy()
        np.testing.assert_allclose(data["mse"], expected_mse, rtol=1e-6)
    assert figure.is_file()
