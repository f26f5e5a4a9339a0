"""A stop flag that asks a training run to stop after a set number of steps, as a Ctrl-C there
would (imported by test modules)."""

from __future__ import annotations

from cnnkit.engine.console import StopFlag


class StopAfter(StopFlag):
    """Asks the loop to stop once it has asked `calls` times (the loop asks before each step)."""

    def __init__(self, calls: int) -> None:
        super().__init__()
        self.calls = calls

    def __call__(self) -> bool:
        self.calls -= 1
        self.requested = self.requested or self.calls < 0
        return self.requested
