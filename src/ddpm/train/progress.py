"""Progress: a tqdm bar on a terminal, plain log lines otherwise."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm


class Progress:
    def __init__(self, total: int, initial: int = 0, batch_size: int = 1, enabled: bool = True) -> None:
        self.enabled = enabled
        self.batch_size = batch_size
        self.total = total
        self.bar = (
            tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True)
            if (enabled and sys.stderr.isatty())
            else None
        )

    def update(self, step: int, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        if self.bar is not None:
            self.bar.n = step
            self.bar.set_postfix(
                loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.0f}", refresh=False
            )
            self.bar.refresh()
        else:
            remaining = (self.total - step) * self.batch_size / max(record["img_per_s"], 1e-9)
            print(
                f"step {step}/{self.total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
                f"{record['img_per_s']:.0f} img/s  elapsed {record['time_s']:.0f}s  eta {remaining:.0f}s",
                flush=True,
            )

    def write(self, message: str) -> None:
        if self.bar is not None:
            self.bar.write(message)
        elif self.enabled:
            print(message, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
