"""docs/ARCHITECTURE.md's rules, enforced: the layers, what each package may import, no import cycle,
commands that never import each other, and the size limits on functions and files."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import ddpm

PACKAGE_DIR = Path(ddpm.__file__).parent
SOURCE_ROOT = PACKAGE_DIR.parent  # the directory that holds ``ddpm/``

# Lowest first; a unit may import units of its own layer or below, never above (docs/ARCHITECTURE.md).
LAYERS: list[set[str]] = [
    {"diffusion", "safe_files", "configio", "devices", "rundir"},
    {"data", "nets", "eval", "viz"},
    {"model", "editing", "control"},
    {"train", "interop"},
    {"command_support", "serve"},
    {"commands"},
    {"cli", "__main__"},
]
# Within a layer, only these imports (unit → units of its own layer it may use).
SAME_LAYER: dict[str, set[str]] = {
    "diffusion": set(),  # pure math: imports nothing else of ours
    "rundir": {"safe_files", "configio"},
    "configio": set(),
    "devices": set(),
    "safe_files": set(),
    "nets": set(),  # networks know shapes, not schedules, data or metrics
    "data": set(),
    "eval": {"data", "nets"},
    "viz": {"data", "eval"},
    "model": {"control"},  # a ControlNet run's control table, frozen base and branch
    "control": set(),
    "editing": {"model"},
    "train": set(),
    "interop": {"train"},
    "command_support": set(),
    "serve": {"command_support"},  # the web server of `ddpm serve`: opens runs as the commands do
    "commands": set(),  # checked per module below: commands never import each other
    "cli": {"commands"},
    "__main__": {"cli"},
}
# Below-layer imports that are still refused: networks know shapes, not schedules.
NEVER: dict[str, set[str]] = {"nets": {"diffusion"}}
MAX_FUNCTION_LINES = 60
MAX_FILE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(SOURCE_ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(source: str, module: str, is_package: bool) -> list[str]:
    """Every absolute module name an import statement in ``source`` may load (deferred imports inside
    functions and ``import_module("…")`` calls included), relative ones resolved."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            stem = ".".join([*base, *([node.module] if node.module else [])])
            names.append(stem)
            # ``from ddpm import nets`` loads a submodule by its alias name.
            names += [f"{stem}.{alias.name}" for alias in node.names if alias.name != "*"]
        elif (
            isinstance(node, ast.Call)
            and getattr(node.func, "attr", getattr(node.func, "id", None)) in ("import_module", "__import__")
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.append(node.args[0].value)
    return names


def unit_of(module: str) -> str | None:
    """``ddpm.train.loop`` → ``train``; None outside the package or for ``ddpm`` itself."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ddpm" and len(parts) > 1 else None


def layer_of(unit: str) -> int:
    for index, units in enumerate(LAYERS):
        if unit in units:
            return index
    raise AssertionError(f"ddpm.{unit} is in no layer of LAYERS; add it (and to docs/ARCHITECTURE.md)")


def violations(module: str, imports: list[str]) -> list[str]:
    """The imports of ``module`` that break a rule, each with the rule it breaks."""
    own = unit_of(module)
    found = []
    for name in imports:
        target = unit_of(name)
        if own is None or target is None or (target == own and own != "commands"):
            continue
        if own == "commands" and target == "commands":
            if name.split(".")[:3] != module.split(".")[:3] and len(name.split(".")) > 2:
                found.append(f"{name} (commands never import each other)")
            continue
        if target in NEVER.get(own, set()):
            found.append(f"{name} ({own} never imports {target})")
        elif layer_of(target) > layer_of(own):
            found.append(f"{name} (layer {layer_of(target)} above {own}'s {layer_of(own)})")
        elif layer_of(target) == layer_of(own) and target not in SAME_LAYER[own]:
            found.append(f"{name} ({own} may not import {target})")
    return found


def source_files() -> Iterator[Path]:
    yield from sorted(PACKAGE_DIR.rglob("*.py"))


def import_graph() -> dict[str, set[str]]:
    """Module → the package's modules it imports (names resolved to existing modules)."""
    files = {module_name(path): path for path in source_files()}
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        names = imported_modules(path.read_text(), module, path.name == "__init__.py")
        graph[module] = {name for name in names if name in files and name != module}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.get(node, ()):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _without_package_inits(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """A package's ``__init__`` re-exporting its submodules is not a cycle with them: drop the edges
    from a submodule up to one of its own parent packages."""
    return {
        module: {name for name in names if not module.startswith(f"{name}.")}
        for module, names in graph.items()
    }


def test_every_module_keeps_the_layer_rules() -> None:
    files = list(source_files())
    units = {unit_of(module_name(path)) for path in files} - {None}
    # The scan must see the real package, or it would pass vacuously.
    assert {"diffusion", "model", "train", "commands", "cli", "rundir"} <= units
    for unit in units:
        layer_of(unit)  # every unit has a layer
    broken = {
        module_name(path): found
        for path in files
        if (found := violations(module_name(path), imported_modules(
            path.read_text(), module_name(path), path.name == "__init__.py")))
    }  # fmt: skip
    assert broken == {}


def test_the_package_has_no_import_cycle() -> None:
    graph = _without_package_inits(import_graph())
    assert len(graph) > 50
    assert cycles(graph) == []


def test_functions_and_files_stay_small() -> None:
    long_functions, long_files = [], []
    for path in source_files():
        text = path.read_text()
        if len(text.splitlines()) > MAX_FILE_LINES:
            long_files.append(f"{module_name(path)}: {len(text.splitlines())} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(f"{module_name(path)}.{node.name}: {length} lines")
    assert long_files == []
    assert long_functions == []


@pytest.mark.parametrize(
    "module, source",
    [
        ("ddpm.diffusion.losses", "import ddpm.nets"),
        ("ddpm.diffusion.losses", "from ddpm.safe_files import load_safetensors"),
        ("ddpm.diffusion.samplers.ddim", "from ...train.ema import EMA"),
        ("ddpm.diffusion.losses", "def f():\n    from ddpm.model import load\n    return load"),
        ("ddpm.diffusion.losses", "import importlib\nnets = importlib.import_module('ddpm.nets')"),
        ("ddpm.nets.unet", "from ddpm.diffusion.process import predict_x0_eps"),
        ("ddpm.nets.unet", "from ddpm.data import load_dataset"),
        ("ddpm.data.load", "from ddpm.train.config import TrainConfig"),
        ("ddpm.eval.evaluate", "from ddpm.train.run_data import load_data"),
        ("ddpm.eval.evaluate", "from ddpm.viz import save_grid"),
        ("ddpm.model", "from ddpm.train.checkpoint import load_checkpoint"),
        ("ddpm.train.run", "from ddpm.commands.eval import evaluate_path"),
        ("ddpm.train.run", "from ddpm import cli"),
        ("ddpm.commands.sample", "from ddpm.commands.eval import format_table"),
        ("ddpm.commands.sample", "from ddpm.commands import report"),
        ("ddpm.rundir", "from ddpm.nets import UNet"),
        ("ddpm.serve.app", "from ddpm.commands.sample import sample_to_files"),
        ("ddpm.command_support", "from ddpm.serve.app import create_app"),
    ],
)
def test_the_rules_catch_violations(module: str, source: str) -> None:
    assert violations(module, imported_modules(source, module, False))


@pytest.mark.parametrize(
    "module, source",
    [
        ("ddpm.diffusion.losses", "import torch\nfrom ddpm.diffusion.schedules import NoiseSchedule"),
        ("ddpm.diffusion.samplers.ddim", "from .. import process"),
        ("ddpm.eval.evaluate", "from ddpm.data import load_dataset"),
        ("ddpm.model", "from ddpm.rundir import RunDir\nfrom ddpm.nets import build_net"),
        ("ddpm.train.run", "from ddpm.model import build_model"),
        ("ddpm.commands.sample", "from ddpm.command_support import open_model\nfrom ddpm.train import run"),
        ("ddpm.cli", "from ddpm.commands import sample"),
    ],
)
def test_the_rules_allow_what_the_layers_allow(module: str, source: str) -> None:
    assert violations(module, imported_modules(source, module, False)) == []


def test_cycles_are_found() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []
