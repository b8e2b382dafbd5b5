"""The hand-written FID Inception-v3 has pytorch-fid's state-dict layout; missing weights fail loudly.

Real weights cannot be downloaded here, so the network is checked against the reference layout
(key names and shapes transcribed from torchvision's Inception3 with pytorch-fid's FID patches:
num_classes 1008, no aux head) and a state dict round trip; not against reference activations.
"""

from __future__ import annotations

import os
import pickle
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from ddpm.eval.inception import (
    FID_WEIGHTS_NAME,
    FID_WEIGHTS_SHA256,
    FID_WEIGHTS_URL,
    FIDInceptionV3,
    convert_fid_weights,
    file_sha256,
    find_fid_weights,
    load_fid_inception,
    main,
)
from ddpm.safe_files import load_safetensors

# (name, in, out, kernel h, kernel w) of every BasicConv2d, per torchvision/models/inception.py


def _block_a(c_in: int, pool: int) -> list[tuple[str, int, int, int, int]]:
    return [("branch1x1", c_in, 64, 1, 1), ("branch5x5_1", c_in, 48, 1, 1), ("branch5x5_2", 48, 64, 5, 5),
            ("branch3x3dbl_1", c_in, 64, 1, 1), ("branch3x3dbl_2", 64, 96, 3, 3),
            ("branch3x3dbl_3", 96, 96, 3, 3), ("branch_pool", c_in, pool, 1, 1)]  # fmt: skip


def _block_c(c7: int) -> list[tuple[str, int, int, int, int]]:
    return [("branch1x1", 768, 192, 1, 1), ("branch7x7_1", 768, c7, 1, 1), ("branch7x7_2", c7, c7, 1, 7),
            ("branch7x7_3", c7, 192, 7, 1), ("branch7x7dbl_1", 768, c7, 1, 1),
            ("branch7x7dbl_2", c7, c7, 7, 1), ("branch7x7dbl_3", c7, c7, 1, 7),
            ("branch7x7dbl_4", c7, c7, 7, 1), ("branch7x7dbl_5", c7, 192, 1, 7),
            ("branch_pool", 768, 192, 1, 1)]  # fmt: skip


def _block_e(c_in: int) -> list[tuple[str, int, int, int, int]]:
    return [("branch1x1", c_in, 320, 1, 1), ("branch3x3_1", c_in, 384, 1, 1),
            ("branch3x3_2a", 384, 384, 1, 3), ("branch3x3_2b", 384, 384, 3, 1),
            ("branch3x3dbl_1", c_in, 448, 1, 1), ("branch3x3dbl_2", 448, 384, 3, 3),
            ("branch3x3dbl_3a", 384, 384, 1, 3), ("branch3x3dbl_3b", 384, 384, 3, 1),
            ("branch_pool", c_in, 192, 1, 1)]  # fmt: skip


REFERENCE_CONVS: dict[str, list[tuple[str, int, int, int, int]]] = {
    "": [("Conv2d_1a_3x3", 3, 32, 3, 3), ("Conv2d_2a_3x3", 32, 32, 3, 3), ("Conv2d_2b_3x3", 32, 64, 3, 3),
         ("Conv2d_3b_1x1", 64, 80, 1, 1), ("Conv2d_4a_3x3", 80, 192, 3, 3)],
    "Mixed_5b.": _block_a(192, 32),
    "Mixed_5c.": _block_a(256, 64),
    "Mixed_5d.": _block_a(288, 64),
    "Mixed_6a.": [("branch3x3", 288, 384, 3, 3), ("branch3x3dbl_1", 288, 64, 1, 1),
                  ("branch3x3dbl_2", 64, 96, 3, 3), ("branch3x3dbl_3", 96, 96, 3, 3)],
    "Mixed_6b.": _block_c(128),
    "Mixed_6c.": _block_c(160),
    "Mixed_6d.": _block_c(160),
    "Mixed_6e.": _block_c(192),
    "Mixed_7a.": [("branch3x3_1", 768, 192, 1, 1), ("branch3x3_2", 192, 320, 3, 3),
                  ("branch7x7x3_1", 768, 192, 1, 1), ("branch7x7x3_2", 192, 192, 1, 7),
                  ("branch7x7x3_3", 192, 192, 7, 1), ("branch7x7x3_4", 192, 192, 3, 3)],
    "Mixed_7b.": _block_e(1280),
    "Mixed_7c.": _block_e(2048),
}  # fmt: skip


def _reference_shapes() -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {}
    for prefix, convs in REFERENCE_CONVS.items():
        for name, c_in, c_out, kh, kw in convs:
            shapes[f"{prefix}{name}.conv.weight"] = (c_out, c_in, kh, kw)
            for stat in ("weight", "bias", "running_mean", "running_var"):
                shapes[f"{prefix}{name}.bn.{stat}"] = (c_out,)
            shapes[f"{prefix}{name}.bn.num_batches_tracked"] = ()
    shapes["fc.weight"], shapes["fc.bias"] = (1008, 2048), (1008,)
    return shapes


def test_state_dict_keys_and_shapes_match_pytorch_fid() -> None:
    got = {key: tuple(value.shape) for key, value in FIDInceptionV3().state_dict().items()}
    assert got == _reference_shapes()
    # torchvision documents 27,161,264 parameters for Inception-v3 with aux head and 1000 classes;
    # minus the aux head (3,326,696) and that fc (2,049,000), plus the 1008-class fc (2,065,392):
    assert sum(p.numel() for p in FIDInceptionV3().parameters()) == 23_850_960


def test_forward_gives_pool_features_and_logits() -> None:
    torch.manual_seed(0)
    net = FIDInceptionV3().eval()
    with torch.no_grad():  # one small grey image: repeated to RGB, resized to 299×299 (≈ 1 s on CPU)
        feats, logits = net(torch.rand(1, 1, 8, 8) * 2 - 1)
    assert feats.shape == (1, 2048) and logits.shape == (1, 1008)
    assert torch.isfinite(feats).all() and (feats >= 0).all()  # averages of ReLU outputs


def test_forward_refuses_training_mode() -> None:
    with pytest.raises(RuntimeError, match="must run in eval mode"):
        FIDInceptionV3().train()(torch.zeros(1, 3, 8, 8))


def test_missing_weights_name_the_file_the_url_and_the_folder(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError) as info:
        load_fid_inception(data_root=tmp_path / "data")
    message = str(info.value)
    assert f"{FID_WEIGHTS_NAME}.pth not found" in message
    assert FID_WEIGHTS_URL in message
    target = tmp_path / "data" / "weights" / f"{FID_WEIGHTS_NAME}.safetensors"
    assert f"`python -m ddpm.eval.inception convert {FID_WEIGHTS_NAME}.pth {target}`" in message
    assert "no other network is substituted" in message and "\n" not in message


def test_an_explicit_missing_path_is_reported(tmp_path: Path) -> None:
    with pytest.raises(
        FileNotFoundError,
        match=r"FID Inception weights not found at .*nothing\.pth; download .* and convert it",
    ):
        find_fid_weights(tmp_path / "nothing.pth")


def test_weights_load_from_safetensors_in_the_cache_folders(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    torch.manual_seed(1)
    state = FIDInceptionV3().state_dict()
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}  # as in old files
    weights_dir = tmp_path / "data" / "weights"
    weights_dir.mkdir(parents=True)
    save_file(state, weights_dir / f"{FID_WEIGHTS_NAME}.safetensors")
    net = load_fid_inception(data_root=tmp_path / "data")
    assert not net.training and torch.equal(net.fc.weight, state["fc.weight"])


def _never_unpickle(*args, **kwargs):
    raise AssertionError("torch.load was called")


@pytest.mark.parametrize("where", ["explicit", "cache"])
def test_a_pth_is_refused_with_the_command_that_converts_it(tmp_path: Path, monkeypatch, where: str) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch, "load", _never_unpickle)
    cache = tmp_path / "torch" / "hub" / "checkpoints"
    cache.mkdir(parents=True)
    pth = cache / f"{FID_WEIGHTS_NAME}.pth"
    pth.write_bytes(b"a pickle")
    converted = pth.with_suffix(".safetensors")
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(pth))} is not a \.safetensors file: FID weights are read only as "
        rf"safetensors, never unpickled; convert the released \.pth once with "
        rf"`python -m ddpm\.eval\.inception convert {re.escape(str(pth))} {re.escape(str(converted))}`$",
    ):
        load_fid_inception(pth if where == "explicit" else None)


def _fake_release(path: Path) -> dict[str, torch.Tensor]:
    """A small state dict saved as pytorch-fid saved its release (the real 95 MB file is not here)."""
    state = {
        "fc.weight": torch.randn(3, 4, generator=torch.Generator().manual_seed(0)),
        "fc.bias": torch.ones(3),
    }
    torch.save(state, path)
    return state


def test_conversion_refuses_a_file_without_the_release_hash_before_unpickling(
    tmp_path: Path, monkeypatch
) -> None:
    fake = tmp_path / f"{FID_WEIGHTS_NAME}.pth"
    _fake_release(fake)
    monkeypatch.setattr(torch, "load", _never_unpickle)
    with pytest.raises(
        ValueError,
        match=rf"^{re.escape(str(fake))} has sha256 {file_sha256(fake)}, not {FID_WEIGHTS_SHA256} "
        rf"\({FID_WEIGHTS_NAME}\.pth\): not converted, nothing unpickled; download https://\S+ again$",
    ):
        convert_fid_weights(fake)
    assert sorted(p.name for p in tmp_path.iterdir()) == [fake.name]


def test_the_release_hash_is_the_full_sha256() -> None:
    assert re.fullmatch(r"[0-9a-f]{64}", FID_WEIGHTS_SHA256)
    assert FID_WEIGHTS_SHA256.startswith(FID_WEIGHTS_NAME.rsplit("-", 1)[1])  # torch.hub's name prefix


def test_a_converted_file_loads_through_the_safe_reader(tmp_path: Path) -> None:
    fake = tmp_path / "release.pth"
    state = _fake_release(fake)
    out = convert_fid_weights(fake, expected_sha256=file_sha256(fake))
    assert out == tmp_path / "release.safetensors"
    loaded = load_safetensors(out)
    assert loaded.keys() == state.keys() and all(torch.equal(loaded[k], state[k]) for k in state)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["release.pth", "release.safetensors"]  # no .part
    with pytest.raises(
        ValueError,
        match=r"is not the FID Inception state dict: missing \['Conv2d_1a_3x3.*"
        r"unexpected \[\], wrong shape \['fc.bias', 'fc.weight'\]$",
    ):
        load_fid_inception(out)  # a small fake: the safe reader reads it, the network check refuses it


def test_the_convert_command(tmp_path: Path, capsys) -> None:
    fake = tmp_path / "release.pth"
    _fake_release(fake)
    out = tmp_path / "out.safetensors"
    assert main(["convert", str(fake), str(out), "--sha256", file_sha256(fake)]) == 0
    assert capsys.readouterr().out == f"wrote {out}\n" and out.is_file()
    assert main(["convert", str(fake), str(tmp_path / "other.safetensors")]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"error: {fake} has sha256 ") and error.count("\n") == 1
    assert not (tmp_path / "other.safetensors").exists()


def test_python_m_runs_the_convert_command(tmp_path: Path) -> None:
    fake = tmp_path / "release.pth"
    _fake_release(fake)
    command = [
        sys.executable,
        "-m",
        "ddpm.eval.inception",
        "convert",
        str(fake),
        "--sha256",
        file_sha256(fake),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    assert done.returncode == 0 and done.stdout == f"wrote {tmp_path / 'release.safetensors'}\n", done.stderr


@pytest.mark.parametrize(
    ("pth", "out", "sha256", "error", "match"),
    [
        (
            "release.pth",
            "out.safetensors",
            "6726825D",
            ValueError,
            r"^expected sha256 '6726825D' is not 64 lower",
        ),
        ("release.pth", "out.pth", None, ValueError, r"^output .*out\.pth must end in \.safetensors$"),
        ("missing.pth", None, None, FileNotFoundError, r"missing\.pth not found; download https://"),
    ],
)
def test_conversion_arguments_are_checked(tmp_path: Path, pth, out, sha256, error, match) -> None:
    _fake_release(tmp_path / "release.pth")
    sha256 = sha256 or file_sha256(tmp_path / "release.pth")
    with pytest.raises(error, match=match):
        convert_fid_weights(tmp_path / pth, out and tmp_path / out, expected_sha256=sha256)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_a_file_with_the_expected_hash_must_still_be_a_weights_only_state_dict(tmp_path: Path) -> None:
    listed = tmp_path / "list.pth"
    torch.save([torch.zeros(1)], listed)
    with pytest.raises(ValueError, match=r"list\.pth does not hold a state dict of tensors$"):
        convert_fid_weights(listed, expected_sha256=file_sha256(listed))
    canary = tmp_path / "canary"
    hostile = tmp_path / "hostile.pth"
    hostile.write_bytes(pickle.dumps(_Canary(canary)))
    with pytest.raises(ValueError, match=r"hostile\.pth: torch\.load\(weights_only=True\) failed: "):
        convert_fid_weights(hostile, expected_sha256=file_sha256(hostile))  # even a hash the user vouches for
    assert not canary.exists() and not (tmp_path / "hostile.safetensors").exists()


class _Canary:
    """Pickles as a call to os.system that would create a file."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.path}",))


def test_a_foreign_state_dict_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "other.safetensors"
    save_file({"fc.weight": torch.zeros(1008, 2048)}, path)
    with pytest.raises(ValueError, match="is not the FID Inception state dict: missing"):
        load_fid_inception(path)
