"""`ddpm interpolate`: a strip between two seeds' noises or two inverted images."""

from __future__ import annotations

import numpy as np

from ddpm.commands.interpolate import interpolate_to_files


def test_a_strip_between_two_images_and_between_two_seeds(digits_run, user_files, tmp_path):
    files = [user_files["digit0"], user_files["digit1"]]
    [strip] = interpolate_to_files(
        digits_run, images=files, num=4, steps=5, out=tmp_path / "i.npz", device="cpu"
    )
    with np.load(strip) as data:
        assert data["images"].shape == (4, 8, 8, 1) and data["images"].dtype == np.uint8
        assert data["weights"].tolist() == [0, 1 / 3, 2 / 3, 1]
    [png] = interpolate_to_files(
        digits_run, seeds=(0, 1), num=3, steps=3, out=tmp_path / "i.png", device="cpu"
    )
    assert png.is_file()


def test_the_ends_of_a_seed_strip_do_not_depend_on_the_other_end(digits_run, tmp_path):
    strips = []
    for seeds in ((0, 1), (0, 2)):
        [npz] = interpolate_to_files(digits_run, seeds=seeds, num=3, steps=3, out=tmp_path / "s.npz")
        strips.append(np.load(npz)["images"])
    assert np.array_equal(strips[0][0], strips[1][0])  # slerp returns its end exactly: seed 0's sample
    assert not np.array_equal(strips[0][-1], strips[1][-1])
