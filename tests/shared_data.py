"""Where the read-only shared data sets lie: ``../shared/data`` beside the repository (CI lays a copy
there), else ``$DDPM_SHARED_DATA``."""

import os
from pathlib import Path

SHARED_DATA = Path(
    os.environ.get("DDPM_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data")
)
