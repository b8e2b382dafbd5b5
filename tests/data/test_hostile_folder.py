"""A hostile image folder, generated here: every bad file is reported once with its reason and
skipped (or, strictly, refused before training); every usable one is used, converted as it should be;
a decompression bomb is refused without being decoded, so memory stays bounded."""

from __future__ import annotations

import dataclasses
import io
import re
import struct
import subprocess
import sys
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.data import load_dataset
from ddpm.data.folder import report_skipped, unusable_images

SIZE = 8
BOMB_SIDE = 10_000  # 10⁸ grey pixels: above PIL's 89.5 M warning threshold, below its error threshold


def _encode(image: Image.Image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png(width: int, height: int, bit_depth: int, colour_type: int, rows) -> bytes:
    """A PNG written by hand (16-bit RGB, or sizes too large to build in memory), rows streamed."""
    compressor, idat = zlib.compressobj(9), []
    for row in rows:
        idat.append(compressor.compress(b"\0" + row))  # filter type 0 per row
    idat.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", b"".join(idat))
        + _chunk(b"IEND", b"")
    )


def _rgb(seed: int, width: int = 16, height: int = 16) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8))


def _exif_rotated() -> bytes:
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, :8, 0] = 255  # stored: left half red; orientation 6 turns it into the top half
    pixels[:, 8:, 2] = 255
    exif = Image.Exif()
    exif[0x0112] = 6
    return _encode(Image.fromarray(pixels), "JPEG", exif=exif.tobytes(), quality=95)


USABLE = {
    "rgb.png": lambda: _encode(_rgb(1), "PNG"),
    "photo.jpg": lambda: _encode(_rgb(2, 24, 16), "JPEG", quality=90),
    "wide.png": lambda: _encode(_rgb(3, 40, 10), "PNG"),  # 4:1, allowed
    "cmyk.jpg": lambda: _encode(Image.new("CMYK", (16, 16), (0, 255, 255, 0)), "JPEG", quality=95),  # red
    "grey16.png": lambda: _encode(Image.fromarray(np.full((16, 16), 257 * 100, np.uint16)), "PNG"),
    "rgb16.png": lambda: _png(16, 16, 16, 2, [struct.pack(">HHH", 257 * 10, 257 * 200, 65535) * 16] * 16),
    "rgba.png": lambda: _encode(Image.new("RGBA", (16, 16), (0, 0, 0, 0)), "PNG"),  # transparent black
    "la.png": lambda: _encode(Image.new("LA", (16, 16), (0, 0)), "PNG"),
    "palette.png": lambda: _encode(Image.new("P", (16, 16), 0), "PNG", transparency=0),
    "exif_rotated.jpg": _exif_rotated,
}
UNUSABLE = {  # name: (bytes, pattern of the reason)
    "truncated.jpg": (lambda: _encode(_rgb(4, 64, 64), "JPEG")[:400], r"OSError: .*truncated|Truncated"),
    "truncated.png": (lambda: _encode(_rgb(5, 64, 64), "PNG")[:400], r"OSError: .*truncated"),
    "empty.png": (lambda: b"", r"^empty file \(0 bytes\)$"),
    "text.jpg": (
        lambda: b"this is a text file, not a JPEG\n",
        r"not an image PIL can read \(starts with b'this is ",
    ),
    "tiny.png": (lambda: _encode(Image.new("RGB", (1, 1)), "PNG"), r"1×1 pixels: a side under 8 pixels"),
    "strip.png": (
        lambda: _encode(Image.new("RGB", (1, 10000)), "PNG"),
        r"1×10000 pixels: a side under 8 pixels",
    ),
    "stripe.png": (
        lambda: _encode(Image.new("RGB", (90, 10)), "PNG"),
        r"90×10 pixels: aspect ratio 9:1 is over 8:1",
    ),
    "bomb.png": (
        lambda: _png(BOMB_SIDE, BOMB_SIDE, 8, 0, [bytes(BOMB_SIDE)] * BOMB_SIDE),
        r"10000×10000 = 100000000 pixels is over the 89478485-pixel limit \(a decompression bomb\?\)",
    ),
    "header_bomb.png": (
        lambda: _png(100_000, 100_000, 8, 0, [bytes(10)]),
        r"decompression bomb refused before decoding",
    ),
}
IGNORED = {
    ".DS_Store": b"\0\0\0\1Bud1",
    "._photo.jpg": b"\0\5\26\7AppleDouble resource fork",
    ".thumbnails/rgb.png": b"a cached thumbnail",
    "notes.txt": b"where these photos come from",
    "labels.csv": b"name,label\n",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("hostile")
    files = {**{n: f() for n, f in USABLE.items()}, **{n: f() for n, (f, _) in UNUSABLE.items()}, **IGNORED}
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _load(root: Path, **options):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        data = load_dataset(f"folder:{root}", image_size=SIZE, **options)
    return data, [str(w.message) for w in caught]


def test_every_bad_file_is_skipped_once_with_its_reason(hostile):
    data, warned = _load(hostile)
    assert len(data) == len(USABLE)
    reasons = {s.name: s.reason for s in data.skipped}
    assert len(reasons) == len(data.skipped)  # each file once
    assert sorted(s.name for s in unusable_images(data.skipped)) == sorted(UNUSABLE)
    for name, (_, pattern) in UNUSABLE.items():
        assert re.search(pattern, reasons[name]), (name, reasons[name])
    ignored = sorted(set(reasons) - set(UNUSABLE))
    assert ignored == [".DS_Store", "._photo.jpg", ".thumbnails/", "labels.csv", "notes.txt"]
    assert all(reasons[name].endswith("(ignored)") for name in ignored)
    assert len(warned) == 1 and warned[0].startswith(f"skipped {len(UNUSABLE)} unreadable image(s)")


def test_usable_images_are_converted_as_they_should_be(hostile):
    data, _ = _load(hostile)
    row = {name: i for i, name in enumerate(sorted(USABLE))}  # rows follow the sorted names
    image = {name: data.data[i].numpy().astype(int) for name, i in row.items()}
    for name in ("rgba.png", "la.png", "palette.png"):
        assert (image[name] == 255).all(), name  # transparency composited on white
    assert np.abs(image["cmyk.jpg"] - np.array([255, 0, 0])[:, None, None]).max() <= 12  # CMYK red → RGB red
    assert (image["grey16.png"] == 100).all()  # 16-bit 257·100 → 100
    assert (image["rgb16.png"] == np.array([10, 200, 255])[:, None, None]).all()
    rotated = image["exif_rotated.jpg"]
    assert rotated[0, 1, SIZE - 2] > 200 and rotated[2, 1, SIZE - 2] < 60  # top right red after rotation
    assert rotated[2, SIZE - 2, 1] > 200 and rotated[0, SIZE - 2, 1] < 60  # bottom left blue


def test_the_report_names_each_file_once_and_strict_mode_refuses(hostile):
    data, _ = _load(hostile)
    lines: list[str] = []
    report_skipped(data, log=lines.append)
    for item in data.skipped:
        assert sum(line.startswith(f"data: skipped {item.name}: ") for line in lines) == 1, item.name
    assert lines[-1] == (
        f"data: training on {len(USABLE)} images; skipped {len(UNUSABLE)} unusable image file(s) "
        f"and ignored {len(IGNORED)} other file(s)"
    )
    with pytest.raises(
        ValueError, match=rf"data 'folder:.*' has {len(UNUSABLE)} unusable image file\(s\), e\.g\. "
    ):
        report_skipped(data, strict=True, log=lines.append)


def test_training_uses_the_valid_images_and_strict_training_refuses_before_writing(hostile, tmp_path):
    from ddpm.train.run import train
    from tests.train.conftest import tiny_digits_config

    tiny_config = tiny_digits_config()
    data = dataclasses.replace(tiny_config.data, spec=f"folder:{hostile}", image_size=SIZE, channels=3)
    run = dataclasses.replace(tiny_config.run, steps=2, checkpoint_every=0, batch_size=4, num_threads=1)
    config = dataclasses.replace(tiny_config, data=data, run=run)
    threads = torch.get_num_threads()
    lines: list[str] = []
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = train(config, tmp_path / "run", log=lines.append)
            strict = dataclasses.replace(config, data=dataclasses.replace(data, strict=True))
            with pytest.raises(ValueError, match=r"unusable image file\(s\).*--strict-data"):
                train(strict, tmp_path / "strict-run", log=lines.append)
    finally:
        torch.set_num_threads(threads)
    assert result.step == 2
    assert sum(line.startswith("data: skipped bomb.png: ") for line in lines) == 1  # strict refuses first
    assert not (tmp_path / "strict-run").exists()


@pytest.mark.skipif(sys.platform != "linux", reason="ru_maxrss is in KiB on Linux")
def test_a_decompression_bomb_is_never_decoded(tmp_path):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "bomb.png").write_bytes(UNUSABLE["bomb.png"][0]())
    (folder / "ok.png").write_bytes(USABLE["rgb.png"]())
    probe = (
        "import resource, sys, warnings\n"
        "from ddpm.data import load_dataset\n"
        "load_dataset('folder:' + sys.argv[2], image_size=8)  # warm up: imports, PIL plugins\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "warnings.simplefilter('ignore')\n"
        "data = load_dataset('folder:' + sys.argv[1], image_size=8)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(len(data), len(data.skipped), after - before)\n"
    )
    warm = tmp_path / "warm"
    warm.mkdir()
    (warm / "ok.png").write_bytes(USABLE["rgb.png"]())
    out = subprocess.run(
        [sys.executable, "-c", probe, str(folder), str(warm)], capture_output=True, text=True, check=True
    )
    used, skipped, grown_kib = map(int, out.stdout.split())
    assert (used, skipped) == (1, 1)
    assert grown_kib < 30 * 1024  # decoding it would take ≥ 100 MB (10⁸ grey pixels)
