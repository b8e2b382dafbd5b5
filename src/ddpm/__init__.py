"""Denoising diffusion probabilistic models (Ho, Jain, Abbeel 2020) for images."""

__version__ = "0.1.0"
