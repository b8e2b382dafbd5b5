"""The FID Inception-v3: TensorFlow's 2015-12-05 graph as ported by pytorch-fid (Heusel et al. 2017).

Written here in plain torch with pytorch-fid's module names, so its released weights
(`pt_inception-2015-12-05-6726825d.pth`, a state dict) load key for key. It differs from
torchvision's Inception-v3 in the TF details that change FID: average pools that ignore padding,
a max pool in the last block's pool branch, and 1008 output classes. Weights are never downloaded
here and no other network is ever substituted: without the file, `load_fid_inception` says which
file to fetch and where to put it.

Evaluation reads the weights only as safetensors (through `ddpm.safe_files.load_safetensors`):
nothing is unpickled. The released file is a pickle, so it is converted once, after its full
sha256 is checked against the release's::

    python -m ddpm.eval.inception convert pt_inception-2015-12-05-6726825d.pth \
        ~/.cache/torch/hub/checkpoints/pt_inception-2015-12-05-6726825d.safetensors

`convert_fid_weights` is that command; its ``torch.load(weights_only=True)`` is the only one in the
package, and it runs only on a file whose bytes are the release's.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import Tensor, nn

from ddpm.safe_files import load_safetensors

FID_WEIGHTS_NAME = "pt_inception-2015-12-05-6726825d"
FID_WEIGHTS_URL = (
    f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{FID_WEIGHTS_NAME}.pth"
)
# the release's full sha256 (95,628,359 bytes), as pinned by other FID implementations; torch.hub
# names the file after its first 8 hex digits
FID_WEIGHTS_SHA256 = "6726825d0af5f729cebd5821db510b11b1cfad8faad88a03f1befd49fb9129b2"
CONVERT_COMMAND = "python -m ddpm.eval.inception convert"
FEATURE_DIM = 2048
NUM_LOGITS = 1008  # the 2015 TF graph's classes (1000 ImageNet + 8 unused)
INPUT_SIZE = 299


class BasicConv2d(nn.Module):
    """Conv (no bias) → BatchNorm (TF's ε = 0.001) → ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_kwargs: object) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_kwargs)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TF's 3×3 average pool divides by the number of real (unpadded) pixels
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class InceptionA(nn.Module):
    """35×35 block: 1×1, 5×5, double 3×3 and pool branches (Mixed_5b–5d)."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """35×35 → 17×17 reduction (Mixed_6a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class InceptionC(nn.Module):
    """17×17 block with factorised 7×7 convolutions (Mixed_6b–6e)."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7_3 = BasicConv2d(c7, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = x
        for conv in (self.branch7x7dbl_1, self.branch7x7dbl_2, self.branch7x7dbl_3):
            branch7x7dbl = conv(branch7x7dbl)
        branch7x7dbl = self.branch7x7dbl_5(self.branch7x7dbl_4(branch7x7dbl))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """17×17 → 8×8 reduction (Mixed_7a)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_2(self.branch7x7x3_1(x))
        branch7x7x3 = self.branch7x7x3_4(self.branch7x7x3_3(branch7x7x3))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class InceptionE(nn.Module):
    """8×8 block with split 1×3 / 3×1 outputs (Mixed_7b with an average pool, Mixed_7c with a max pool)."""

    def __init__(self, in_channels: int, *, max_pool_branch: bool) -> None:
        super().__init__()
        # TF's last block pools with max, not average: a quirk of the 2015 graph that FID keeps
        self.max_pool_branch = max_pool_branch
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        pooled = F.max_pool2d(x, 3, stride=1, padding=1) if self.max_pool_branch else _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class FIDInceptionV3(nn.Module):
    """Inception-v3 returning (pool3 features (N, 2048), logits (N, 1008)) for images in [-1, 1].

    Inputs of any size and 1 or 3 channels are resized bilinearly to 299×299 (as pytorch-fid) and
    grey images are repeated to RGB. Always evaluate in eval mode (BatchNorm running statistics):
    `load_fid_inception` returns it so, and `forward` refuses training mode.
    """

    def __init__(self) -> None:
        super().__init__()
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = InceptionA(192, pool_features=32)
        self.Mixed_5c = InceptionA(256, pool_features=64)
        self.Mixed_5d = InceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = InceptionC(768, channels_7x7=128)
        self.Mixed_6c = InceptionC(768, channels_7x7=160)
        self.Mixed_6d = InceptionC(768, channels_7x7=160)
        self.Mixed_6e = InceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = InceptionE(1280, max_pool_branch=False)
        self.Mixed_7c = InceptionE(2048, max_pool_branch=True)
        self.fc = nn.Linear(FEATURE_DIM, NUM_LOGITS)

    def forward(self, images: Tensor) -> tuple[Tensor, Tensor]:
        if self.training:
            raise RuntimeError(
                "FIDInceptionV3 must run in eval mode (call .eval()): FID uses BN running stats"
            )
        x = images.expand(-1, 3, -1, -1) if images.shape[1] == 1 else images  # (N, 3, H, W)
        x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        x = self.Conv2d_2b_3x3(self.Conv2d_2a_3x3(self.Conv2d_1a_3x3(x)))  # (N, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 64, 73, 73)
        x = self.Conv2d_4a_3x3(self.Conv2d_3b_1x1(x))  # (N, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # (N, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # (N, 288, 35, 35)
        x = self.Mixed_6a(x)  # (N, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # (N, 768, 17, 17)
        x = self.Mixed_7c(self.Mixed_7b(self.Mixed_7a(x)))  # (N, 2048, 8, 8)
        features = x.mean(dim=(2, 3))  # (N, 2048): the pool3 features FID uses
        return features, self.fc(features)


def weight_search_paths(data_root: Path | None = None) -> list[Path]:
    """Where `load_fid_inception` looks, in order: <data_root>/weights/, then torch.hub's checkpoint dir.

    Each folder is searched for the converted .safetensors and then for the released .pth, which is
    never read but named in the error, with the command that converts it.
    """
    torch_home = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch"))
    folders = ([Path(data_root) / "weights"] if data_root is not None else []) + [
        torch_home / "hub" / "checkpoints"
    ]
    return [
        folder / f"{FID_WEIGHTS_NAME}{suffix}" for folder in folders for suffix in (".safetensors", ".pth")
    ]


def find_fid_weights(weights_path: str | Path | None = None, data_root: Path | None = None) -> Path:
    """The weights file to use, or FileNotFoundError naming the file, its URL and where to put it."""
    if weights_path is not None:
        if not Path(weights_path).is_file():
            raise FileNotFoundError(
                f"FID Inception weights not found at {weights_path}; download {FID_WEIGHTS_URL} "
                f"and convert it with `{CONVERT_COMMAND} IN.pth OUT.safetensors`"
            )
        return Path(weights_path)
    candidates = weight_search_paths(data_root)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    target = candidates[0].with_suffix(".safetensors")
    raise FileNotFoundError(
        f"FID Inception weights {FID_WEIGHTS_NAME}.pth not found; download {FID_WEIGHTS_URL} and convert "
        f"it once with `{CONVERT_COMMAND} {FID_WEIGHTS_NAME}.pth {target}` "
        f"(searched: {', '.join(str(c) for c in candidates)}); no other network is substituted"
    )


def _read_state_dict(path: Path) -> dict[str, Tensor]:
    """The weights of a .safetensors file; anything else (the released .pth above all) is refused."""
    if path.suffix != ".safetensors":
        converted = path.with_suffix(".safetensors")
        raise ValueError(
            f"{path} is not a .safetensors file: FID weights are read only as safetensors, never unpickled; "
            f"convert the released .pth once with `{CONVERT_COMMAND} {path} {converted}`"
        )
    return load_safetensors(path)


def load_fid_inception(
    weights_path: str | Path | None = None,
    *,
    data_root: Path | None = None,
    device: str | torch.device = "cpu",
) -> FIDInceptionV3:
    """Build the FID Inception-v3 and load pytorch-fid's weights from their converted .safetensors.

    Every parameter and buffer must come from the file; only BatchNorm's `num_batches_tracked`
    counters (unused in eval mode) may be absent from older files. A .pth is refused with the
    command that converts it (see :func:`convert_fid_weights`).
    """
    path = find_fid_weights(weights_path, data_root)
    state = _read_state_dict(path)
    model = FIDInceptionV3()
    expected = model.state_dict()
    missing = [k for k in expected if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in expected]
    misshapen = [k for k in state if k in expected and state[k].shape != expected[k].shape]
    if missing or unexpected or misshapen:
        raise ValueError(
            f"{path} is not the FID Inception state dict: missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}, wrong shape {misshapen[:3]}"
        )
    model.load_state_dict(state, strict=False)
    return model.eval().requires_grad_(False).to(device)


def file_sha256(path: Path) -> str:
    """Hex sha256 of a file, read 1 MiB at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def convert_fid_weights(
    pth: str | Path, out: str | Path | None = None, *, expected_sha256: str = FID_WEIGHTS_SHA256
) -> Path:
    """Convert pytorch-fid's released weights (a pickled state dict) to .safetensors, once.

    The file's full sha256 must equal ``expected_sha256`` (the release's) before it is opened: only
    then does ``torch.load(weights_only=True)``, the package's one unpickling call, read it. Writes
    ``out`` (default: ``pth`` with the suffix .safetensors) by renaming a complete file, and returns it.
    Raises FileNotFoundError or a one-line ValueError naming the file and what was expected.
    """
    pth = Path(pth)
    out = pth.with_suffix(".safetensors") if out is None else Path(out)
    if not re.fullmatch(r"[0-9a-f]{64}", expected_sha256):
        raise ValueError(f"expected sha256 {expected_sha256!r} is not 64 lowercase hex digits")
    if out.suffix != ".safetensors":
        raise ValueError(f"output {out} must end in .safetensors")
    if not pth.is_file():
        raise FileNotFoundError(f"{pth} not found; download {FID_WEIGHTS_URL}")
    digest = file_sha256(pth)
    if digest != expected_sha256:
        raise ValueError(
            f"{pth} has sha256 {digest}, not {expected_sha256} ({FID_WEIGHTS_NAME}.pth): "
            f"not converted, nothing unpickled; download {FID_WEIGHTS_URL} again"
        )
    try:
        state = torch.load(pth, map_location="cpu", weights_only=True)
    except Exception as error:  # the bytes are the expected ones, so this is a torch version problem
        raise ValueError(
            f"{pth}: torch.load(weights_only=True) failed: {type(error).__name__}: {error}"
        ) from None
    if not (isinstance(state, dict) and state and all(isinstance(v, Tensor) for v in state.values())):
        raise ValueError(f"{pth} does not hold a state dict of tensors")
    partial = out.with_name(f".{out.name}.part")
    tensors = {str(name): value.detach().clone() for name, value in state.items()}  # no shared storage
    save_file(tensors, str(partial), metadata={"source": pth.name, "source_sha256": digest})
    partial.replace(out)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m ddpm.eval.inception convert IN.pth [OUT.safetensors] [--sha256 HEX]``."""
    parser = argparse.ArgumentParser(
        prog="python -m ddpm.eval.inception", description="Convert the FID Inception weights to safetensors."
    )
    commands = parser.add_subparsers(dest="command", required=True)
    convert = commands.add_parser("convert", help=f"check {FID_WEIGHTS_NAME}.pth's sha256 and convert it")
    convert.add_argument("pth", type=Path, help=f"the downloaded {FID_WEIGHTS_NAME}.pth")
    convert.add_argument("out", type=Path, nargs="?", help="where to write (default: IN with .safetensors)")
    convert.add_argument(
        "--sha256", default=FID_WEIGHTS_SHA256, help="expected sha256 (default: the release's)"
    )
    args = parser.parse_args(argv)
    try:
        out = convert_fid_weights(args.pth, args.out, expected_sha256=args.sha256)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
