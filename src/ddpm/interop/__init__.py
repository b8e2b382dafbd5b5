"""Other formats in and out: diffusers folders (``UNet2DModel`` + a scheduler config) ⇄ our models."""
