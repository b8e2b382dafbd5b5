"""What ``ddpm train`` trains without --preset on CIFAR-10-like data (issue 20): the device decides.

``--data cifar10`` and ``--data folder:PATH`` default to the paper's GPU recipe (the ``cifar10`` preset:
35.7M parameters, 800k steps) on a CUDA device, and on a CPU to a recipe a laptop trains in minutes,
sized to the images (a folder's from one image's header, :mod:`ddpm.data.probe`):

- under 64 px: pixel diffusion with the ``cifar10-cpu`` preset, at the images' own size (a multiple of 4);
- 64 px and more: two stages (Rombach et al. 2022), an f=8 autoencoder into ``OUT/autoencoder``, then
  latent diffusion on its latents into ``OUT`` (``train.cpu_recipe``), at the images' size rounded down
  to a multiple of 16 and at most 128 px: a 2-core CPU cannot train an autoencoder of larger photos in
  the minutes this recipe is for (``--set data.image_size=N`` trains at N instead).

Every other data set keeps its own preset on every device; an explicit --preset always wins.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ddpm.data.probe import first_image_side
from ddpm.data.spec import parse_spec
from ddpm.train.config import TrainConfig
from ddpm.train.presets import autoencoder_cpu, cifar10_cpu, get_preset, latent_cpu, preset_for_data

DEVICE_AWARE = ("cifar10", "folder")  # data sets whose default recipe depends on the device
LATENT_FROM_PX = 64  # images this large and larger train in latent space on a CPU
CPU_MAX_PX = 128  # the CPU recipe resizes larger images to this
CIFAR10_PX = 32
MIN_PX = 8  # smaller images are upscaled to this (the folder loader refuses shorter sides anyway)


@dataclass(frozen=True)
class Recipe:
    """The default recipe of a run: on which device class, in which space, at what image size."""

    device: str  # "cpu" or "cuda"
    space: str  # "gpu" (the data set's own preset), "pixel" (cifar10-cpu) or "latent" (two stages)
    image_size: int  # pixels the run trains at; 0 → the data set's default (a folder's: 32)
    native_size: int = 0  # the images' own shorter side, where it was read (0: not read)

    @property
    def two_stage(self) -> bool:
        return self.space == "latent"


def uses_cuda(device: str) -> bool:
    """Whether ``--device`` (auto, cpu, cuda, cuda:N) computes on a GPU here."""
    return device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())


def choose_recipe(spec: str, device: str, native_size: int = 0, requested_size: int = 0) -> Recipe | None:
    """The recipe for data ``spec`` on ``device`` whose images are ``native_size`` px (their shorter side),
    trained at ``requested_size`` when that is set (``data.image_size``); None for a data set that has one
    recipe on every device. Reads nothing."""
    name = spec.split(":", 1)[0]
    if name not in DEVICE_AWARE:
        return None
    if uses_cuda(device):
        return Recipe("cuda", "gpu", requested_size, native_size)
    size = requested_size or native_size or CIFAR10_PX
    if size < LATENT_FROM_PX:
        trained = requested_size or (0 if name == "cifar10" else max(MIN_PX, size - size % 4))
        return Recipe("cpu", "pixel", trained, native_size)
    trained = requested_size or min(CPU_MAX_PX, size - size % 16)
    return Recipe("cpu", "latent", trained, native_size)


def recipe_for(spec: str, device: str = "auto", requested_size: int = 0) -> Recipe | None:
    """:func:`choose_recipe` for data ``spec``, reading a folder's image size from one image's header on a
    CPU (a GPU's recipe does not depend on it)."""
    if spec.split(":", 1)[0] not in DEVICE_AWARE:
        return None  # before parse_spec: the preset's lookup names what is allowed
    name, path = parse_spec(spec)
    native = 0
    if name == "cifar10":
        native = CIFAR10_PX
    elif name == "folder" and not requested_size and not uses_cuda(device):
        assert path is not None  # parse_spec guarantees it
        native = first_image_side(path) or 0  # unknown: the folder default; loading it says what is wrong
    return choose_recipe(spec, device, native, requested_size)


def recipe_config(recipe: Recipe | None, spec: str, kind: str) -> TrainConfig | None:
    """The sized config a ``kind`` run (diffusion, autoencoder, latent) of ``recipe`` starts from; None where
    the data set's own preset applies (every GPU recipe; autoencoder and latent runs of small images)."""
    if recipe is None or recipe.device != "cpu":
        return None
    size = recipe.image_size
    if recipe.space == "pixel":
        if kind != "diffusion":
            return None
        config = cifar10_cpu(size or CIFAR10_PX)
        return config if not size else _at_size(config, size)
    if kind == "autoencoder":
        return autoencoder_cpu(spec, size)
    if kind == "latent":
        return latent_cpu(spec, size)
    return None  # the two stages are trained by train.cpu_recipe, one kind each


def default_config(
    spec: str, kind: str = "diffusion", device: str = "auto", requested_size: int = 0
) -> TrainConfig:
    """The config a run of data ``spec`` starts from when no --preset is named (before --config, --set and
    flags): the CPU recipe's, sized to the images, or the data set's own preset."""
    config = recipe_config(recipe_for(spec, device, requested_size), spec, kind)
    return config if config is not None else get_preset(preset_for_data(spec, kind))


def _at_size(config: TrainConfig, size: int) -> TrainConfig:
    return replace(config, data=replace(config.data, image_size=size))


def recipe_line(recipe: Recipe, budgets: tuple[str, ...]) -> str:
    """One line saying which recipe was chosen and how to get the other; ``budgets`` says how long each
    stage trains ("6 min", "2000 steps")."""
    if recipe.device == "cuda":
        return (
            "GPU recipe: preset cifar10 (the paper's: 35.7M parameters, 800k steps); "
            "--device cpu for the CPU recipe"
        )
    size = recipe.image_size or recipe.native_size or CIFAR10_PX
    if recipe.space == "pixel":
        what = f"CPU recipe for {size} px images: pixel diffusion, preset cifar10-cpu ({budgets[0]})"
    else:
        native = recipe.native_size or size
        resized = (
            f" (resized to {size} px; --set data.image_size=N for another size)" if native != size else ""
        )
        what = (
            f"CPU recipe for {native} px images{resized}: autoencoder f=8 ({budgets[0]}) then latent "
            f"diffusion ({budgets[1]})"
        )
    return f"{what}; --preset cifar10 for the paper's GPU recipe"
