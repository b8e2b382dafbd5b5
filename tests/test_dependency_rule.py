"""DESIGN.md's rule: ``ddpm.diffusion`` imports nothing from nets, train, data, eval, viz or cli."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import ddpm.diffusion

FORBIDDEN = ("ddpm.nets", "ddpm.train", "ddpm.data", "ddpm.eval", "ddpm.viz", "ddpm.cli")
DIFFUSION_DIR = Path(ddpm.diffusion.__file__).parent
PACKAGE_ROOT = DIFFUSION_DIR.parent.parent  # the directory that holds ``ddpm/``


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Every absolute module name an import statement in ``source`` may load, relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            names.append(stem)
            # ``from ddpm import nets`` and ``from .. import train`` load submodules by their alias name.
            names += [f"{stem}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and (
                getattr(node.func, "attr", None) == "import_module"
                or getattr(node.func, "id", None) == "__import__"
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def forbidden_imports(source: str, module: str, is_package: bool = False) -> list[str]:
    """The imports in ``source`` (the text of ``module``) that break the rule."""
    return [
        name
        for name in _imported_modules(source, module, is_package)
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    ]


def _diffusion_files() -> list[Path]:
    return sorted(DIFFUSION_DIR.rglob("*.py"))


def test_diffusion_imports_nothing_from_the_rest_of_the_package() -> None:
    files = _diffusion_files()
    names = {_module_name(path) for path in files}
    # The scan must see the real package, or it would pass vacuously.
    assert {"ddpm.diffusion", "ddpm.diffusion.schedules", "ddpm.diffusion.process"} <= names
    violations = {
        _module_name(path): found
        for path in files
        if (found := forbidden_imports(path.read_text(), _module_name(path), path.name == "__init__.py"))
    }
    assert violations == {}


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ("import ddpm.nets", "ddpm.diffusion.losses", False),
        ("import ddpm.viz.figures as figures", "ddpm.diffusion.losses", False),
        ("from ddpm.train.loop import train", "ddpm.diffusion.losses", False),
        ("from ddpm import cli", "ddpm.diffusion.losses", False),
        ("from ddpm import data as d", "ddpm.diffusion.losses", False),
        ("from ..nets import unet", "ddpm.diffusion.losses", False),
        ("from .. import eval", "ddpm.diffusion.process", False),
        ("from ... import nets", "ddpm.diffusion.samplers.ddim", False),
        ("from ...train.ema import EMA", "ddpm.diffusion.samplers.ddim", False),
        ("from ... import nets", "ddpm.diffusion.samplers", True),
        ("def f():\n    from ddpm.nets.unet import UNet\n    return UNet", "ddpm.diffusion.losses", False),
        ("import typing\nif typing.TYPE_CHECKING:\n    import ddpm.data", "ddpm.diffusion.losses", False),
        ("import importlib\nnets = importlib.import_module('ddpm.nets')", "ddpm.diffusion.losses", False),
    ],
)
def test_rule_catches_violations(source: str, module: str, is_package: bool) -> None:
    assert forbidden_imports(source, module, is_package)


@pytest.mark.parametrize(
    "source, module, is_package",
    [
        ("import torch\nfrom torch import Tensor", "ddpm.diffusion.losses", False),
        ("from ddpm.diffusion.schedules import NoiseSchedule", "ddpm.diffusion.losses", False),
        ("from . import process\nfrom .schedules import make_schedule", "ddpm.diffusion.losses", False),
        ("from .. import process", "ddpm.diffusion.samplers.ddim", False),
        ("from . import ddim\nfrom .. import nets", "ddpm.diffusion.samplers", True),
        ("import ddpm.network_free_name", "ddpm.diffusion.losses", False),
        ("from ddpm.diffusion import nets_like_helper", "ddpm.diffusion.losses", False),
    ],
)
def test_rule_allows_diffusion_and_outside_imports(source: str, module: str, is_package: bool) -> None:
    assert forbidden_imports(source, module, is_package) == []
