"""Only safetensors and JSON/TOML are read: pickle canaries never fire, lying headers are refused.

A canary is a pickle whose unpickling would create a file. It is put, under every name the package
reads, where a model file is expected; the file must never appear. A safetensors file whose header
lies is refused by the header check, before safetensors (and any tensor allocation) is reached.
"""

import hashlib
import io
import json
import pickle
import pickletools
import shutil
import struct
import zipfile

import pytest
import torch
from safetensors import SafetensorError
from safetensors.torch import save, save_file

from ddpm.rundir import CheckpointError, RunDir
from ddpm.safe_files import UnsafeFileError, load_safetensors, read_safetensors_header
from ddpm.train.checkpoint import load_checkpoint, save_checkpoint


class Canary:
    """Unpickling calls open(path, "w"): the file appears if anything ever unpickles this."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _canaries(tmp_path):
    """(name, bytes, path the canary would create) for a raw pickle and a torch.save zip."""
    out = []
    for kind in ("pickle", "torch-save"):
        fired = tmp_path / f"fired-{kind}"
        if kind == "pickle":
            data = pickle.dumps({"weight": Canary(fired)}, protocol=4)
        else:
            target = tmp_path / "payload.pt"
            torch.save({"weight": Canary(fired)}, target)
            data = target.read_bytes()
        out.append((kind, data, fired))
    return out


def _checkpoint(tmp_path):
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.AdamW(net.parameters())
    net(torch.randn(2, 3)).sum().backward()
    optimizer.step()
    state = net.state_dict()
    return save_checkpoint(
        tmp_path / "run", 1, model=state, ema=state, optimizer=optimizer.state_dict(), meta={}
    )


def _replace_and_rehash(path, name, data):
    """Swap a file of a checkpoint and update the manifest, so only the content check can refuse it."""
    (path / name).write_bytes(data)
    manifest = json.loads((path / "manifest.json").read_text())
    manifest[name] = hashlib.sha256(data).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest, indent=1))


@pytest.mark.parametrize(
    "name", ["model.safetensors", "ema.safetensors", "optimizer.safetensors", "meta.json", "manifest.json"]
)
def test_canaries_in_a_checkpoint_never_fire(tmp_path, name):
    for kind, data, fired in _canaries(tmp_path):
        path = _checkpoint(tmp_path / kind)
        if name == "manifest.json":
            (path / name).write_bytes(data)
        else:
            _replace_and_rehash(path, name, data)
        with pytest.raises(CheckpointError, match=name.replace(".", r"\.")):
            load_checkpoint(path)
        assert RunDir(path.parent.parent).latest_checkpoint(warn=lambda _: None) is None
        assert not fired.exists(), kind


@pytest.mark.parametrize("suffix", [".safetensors", ".pt", ".pth", ".bin", ".ckpt"])
def test_canaries_under_any_suffix_are_refused_by_the_safetensors_reader(tmp_path, suffix):
    for kind, data, fired in _canaries(tmp_path):
        path = tmp_path / f"weights{suffix}"
        path.write_bytes(data)
        message = r"is a pickle, not a safetensors file" if kind == "pickle" else r"is a zip archive"
        with pytest.raises(UnsafeFileError, match=message):
            load_safetensors(path)
        assert not fired.exists(), kind


def test_canaries_at_the_other_entry_points_never_fire(tmp_path):
    from ddpm.configio import read_toml
    from ddpm.interop.diffusers import load_diffusers_unet, unet_config_to_diffusers
    from ddpm.model import load
    from ddpm.train.presets import get_preset

    unet_config = unet_config_to_diffusers(get_preset("digits").model)
    for kind, data, fired in _canaries(tmp_path):
        run = tmp_path / kind / "run"
        checkpoint = _checkpoint(tmp_path / kind)
        _replace_and_rehash(checkpoint, "model.safetensors", data)
        _replace_and_rehash(checkpoint, "ema.safetensors", data)
        (run / "config.toml").write_bytes(data)
        (tmp_path / kind / "model.pt").write_bytes(data)
        for target in (run, checkpoint, tmp_path / kind / "model.pt"):
            with pytest.raises(ValueError):  # CheckpointError: a refused file, or no checkpoint at all
                load(target)
        with pytest.raises(ValueError):  # ConfigError, or UnicodeDecodeError for binary bytes
            read_toml(run / "config.toml")
        unet = tmp_path / kind / "diffusers" / "unet"
        unet.mkdir(parents=True)
        (unet / "config.json").write_text(json.dumps(unet_config))
        (unet / "diffusion_pytorch_model.safetensors").write_bytes(data)
        with pytest.raises((ValueError, SafetensorError)):  # until it uses load_safetensors
            load_diffusers_unet(unet.parent)
        assert not fired.exists(), kind


def _file(header: dict | bytes, data: bytes = b"\0" * 16, length: int | None = None) -> bytes:
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


F32x4 = {"dtype": "F32", "shape": [4], "data_offsets": [0, 16]}
LIES = {
    "huge header length": (_file({"a": F32x4}, length=2**62), r"header claims 4611686018427387904 bytes"),
    "header past the end": (_file({"a": F32x4}, length=1000), r"header claims 1000 bytes"),
    "too short": (b"\x01\x00", r"too short for a header"),
    "not JSON": (_file(b"{not json}"), r"header that is not JSON"),
    "not an object": (_file(b"[1, 2]"), r"header that is not a JSON object"),
    "duplicate names": (_file(b'{"a": 1, "a": 2}'), r"header that is not JSON \(duplicate keys\)"),
    "unknown dtype": (_file({"a": {**F32x4, "dtype": "F128"}}), r"tensor 'a' has dtype 'F128'"),
    "negative shape": (_file({"a": {**F32x4, "shape": [-4]}}), r"tensor 'a' has shape \[-4\]"),
    "float shape": (_file({"a": {**F32x4, "shape": [4.0]}}), r"tensor 'a' has shape \[4.0\]"),
    "bad offsets": (
        _file({"a": {**F32x4, "data_offsets": [0]}}),
        r"data_offsets \[0\]; expected \[begin, end\]",
    ),
    "shape bigger than bytes": (
        _file({"a": {**F32x4, "shape": [10**12]}}),
        r"needs 4000000000000 bytes but its data_offsets \[0, 16\] give 16",
    ),
    "huge shape and offsets": (
        _file({"a": {"dtype": "F32", "shape": [2**40], "data_offsets": [0, 2**42]}}),
        r"the tensors cover 4398046511104 bytes of data but the file holds 16",
    ),
    "offsets past the end": (
        _file({"a": {**F32x4, "data_offsets": [16, 32]}}),
        r"tensor 'a' starts at byte 16 of the data, expected 0",
    ),
    "overlap": (
        _file({"a": F32x4, "b": {**F32x4, "data_offsets": [8, 24]}}, b"\0" * 24),
        r"tensor 'b' starts at byte 8 of the data, expected 16",
    ),
    "trailing bytes": (_file({"a": F32x4}, b"\0" * 20), r"cover 16 bytes of data but the file holds 20"),
    "extra key": (
        _file({"a": {**F32x4, "code": "x"}}),
        r"tensor 'a' needs exactly dtype, shape and data_offsets",
    ),
    "bad metadata": (
        _file({"__metadata__": {"a": 1}, "b": F32x4}),
        r"__metadata__ must map strings to strings",
    ),
}


@pytest.mark.parametrize("lie", sorted(LIES))
def test_a_lying_header_is_refused_before_safetensors_sees_it(tmp_path, monkeypatch, lie):
    data, message = LIES[lie]
    path = tmp_path / "lie.safetensors"
    path.write_bytes(data)

    def never(*args, **kwargs):
        raise AssertionError("safetensors was called on a file the header check should refuse")

    monkeypatch.setattr("safetensors.torch.load_file", never)
    with pytest.raises(UnsafeFileError, match=message) as caught:
        load_safetensors(path)
    assert str(path) in str(caught.value) and len(str(caught.value).splitlines()) == 1


def test_a_lying_header_inside_a_checkpoint_is_refused_and_skipped(tmp_path):
    older = _checkpoint(tmp_path)
    newer = older.parent / "step_0000002"
    shutil.copytree(older, newer)
    meta = json.loads((newer / "meta.json").read_text())
    _replace_and_rehash(newer, "meta.json", json.dumps({**meta, "step": 2}, indent=1).encode())
    _replace_and_rehash(newer, "model.safetensors", LIES["huge shape and offsets"][0])
    with pytest.raises(CheckpointError, match=r"step_0000002: .*model\.safetensors: the tensors cover"):
        load_checkpoint(newer)
    messages = []
    assert RunDir(tmp_path / "run").latest_checkpoint(warn=messages.append) == older
    assert "skipping step_0000002" in messages[0]


def test_honest_files_of_every_dtype_load_exactly(tmp_path):
    tensors = {
        "f32": torch.randn(3, 4),
        "bf16": torch.randn(5).bfloat16(),
        "f16": torch.randn(2, 2).half(),
        "i64": torch.arange(7),
        "u8": torch.arange(9, dtype=torch.uint8),
        "bool": torch.tensor([True, False]),
        "empty": torch.zeros(0, 3),
        "scalar": torch.tensor(2.5),
    }
    path = tmp_path / "ok.safetensors"
    save_file(tensors, path, metadata={"format": "pt"})
    assert set(read_safetensors_header(path)) == set(tensors)
    loaded = load_safetensors(path)
    assert all(torch.equal(loaded[name], value) for name, value in tensors.items())
    (tmp_path / "none.safetensors").write_bytes(save({}))
    assert load_safetensors(tmp_path / "none.safetensors") == {}


def _calls_open(pickle_bytes: bytes) -> bool:
    """Whether a pickle stream imports open and calls it; read with pickletools, never run."""
    ops = [(op.name, arg) for op, arg, _ in pickletools.genops(pickle_bytes)]
    imports_open = any(name == "GLOBAL" and str(arg).split()[-1] == "open" for name, arg in ops) or (
        any(name == "STACK_GLOBAL" for name, _ in ops) and ("SHORT_BINUNICODE", "open") in ops
    )
    return imports_open and any(name == "REDUCE" for name, _ in ops)


def test_the_canaries_are_live(tmp_path):
    """The payloads would call open(path, "w") if unpickled, so the tests above could fail.

    Checked by reading the opcodes, not by unpickling: nothing in this project unpickles.
    """
    (_, pickle_data, _), (_, zip_data, _) = _canaries(tmp_path)
    assert _calls_open(pickle_data)
    with zipfile.ZipFile(io.BytesIO(zip_data)) as archive:
        inner = next(name for name in archive.namelist() if name.endswith("data.pkl"))
        assert _calls_open(archive.read(inner))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_canaries_as_fid_weights_never_fire(tmp_path):
    """The one reader of a .pth (pytorch-fid's published weights) unpickles with weights_only=True."""
    from ddpm.eval.inception import load_fid_inception

    for kind, data, fired in _canaries(tmp_path):
        for name in ("weights.pth", "weights.safetensors"):
            (tmp_path / name).write_bytes(data)
            with pytest.raises((ValueError, pickle.UnpicklingError, SafetensorError, RuntimeError)):
                load_fid_inception(tmp_path / name)
        assert not fired.exists(), kind
