"""SIGINT/SIGTERM: finish the current step, checkpoint, exit 0; a second SIGINT stops at once."""

from __future__ import annotations

import signal
import threading
from types import FrameType


class StopRequests:
    """Context manager that turns the first SIGINT/SIGTERM into a polite stop request."""

    def __init__(self) -> None:
        self.requested = False
        self.reason = ""
        self._previous: dict[int, object] = {}

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt  # second Ctrl-C: leave now (checkpoints are atomic)
        self.requested = True
        self.reason = f"{signal.Signals(signum).name} received"

    def __enter__(self) -> StopRequests:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
