"""What encoding a latent run's data once costs against encoding on the fly (docs/LATENT.md).

Times the preset autoencoder's encoder on one batch of 256 images and three training steps (batch 64) of
the preset latent U-Net, per image, for mnist (f=4) and cifar10 (f=4). Untrained networks: the cost does
not depend on the weights.

    OMP_NUM_THREADS=2 python benchmarks/latent_cache_cost.py
"""

from __future__ import annotations

import dataclasses
import time

import torch

from ddpm.nets import AutoencoderKL, build_net
from ddpm.train.presets import get_preset

IMAGES = {"mnist": 60_000, "cifar10": 2 * 50_000}  # cifar10 flips: each image encoded twice


def main() -> None:
    torch.set_num_threads(2)
    for name, size, channels, side in (("mnist", 28, 1, 7), ("cifar10", 32, 3, 8)):
        autoencoder = AutoencoderKL(get_preset(f"autoencoder-{name}").model).eval()
        unet_config = dataclasses.replace(get_preset(f"latent-{name}").model, in_channels=4, image_size=side)
        unet = build_net(unet_config)
        images = torch.randn(256, channels, size, size)
        with torch.no_grad():
            autoencoder.encode(images[:32])  # warm-up
            started = time.perf_counter()
            autoencoder.encode(images)
            encode = (time.perf_counter() - started) / 256
        optimizer = torch.optim.AdamW(unet.parameters())
        z, t = torch.randn(64, 4, side, side), torch.randint(0, 1000, (64,))
        for i in range(4):
            if i == 1:
                started = time.perf_counter()
            loss = (unet(z, t) - z).pow(2).mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        step = (time.perf_counter() - started) / 3 / 64
        print(f"{name}: encoder {encode * 1e3:.2f} ms/image, latent U-Net step {step * 1e3:.2f} ms/image; "
              f"on the fly adds {100 * encode / step:.0f}% per step; encoding once costs "
              f"{encode * IMAGES[name]:.0f} s")  # fmt: skip


if __name__ == "__main__":
    main()
