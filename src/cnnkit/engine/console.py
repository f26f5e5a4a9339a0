"""What a person sees and does during training: the progress bar and Ctrl-C."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tqdm import tqdm

from cnnkit.engine.loop import EpochProgress

# a second signal sooner than this after the first is the same one delivered twice (a terminal's
# Ctrl-C reaches torchrun's workers directly and again through torchrun), not "abort"
SAME_SIGNAL_SECONDS = 1.0


class StopFlag:
    """First Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, a job scheduler) asks the loop
    to stop after the current batch and save last.pt; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked, if one did
        self._first = 0.0  # when it asked (time.monotonic)

    def __call__(self) -> bool:
        return self.requested

    @contextmanager
    def installed(self) -> Iterator[StopFlag]:
        if threading.current_thread() is not threading.main_thread():
            yield self
            return

        def handler(signum: int, frame: Any) -> None:
            now = time.monotonic()
            if self.requested and now - self._first < SAME_SIGNAL_SECONDS:
                return  # the same Ctrl-C twice: from the terminal and forwarded by torchrun
            if self.requested:
                raise KeyboardInterrupt
            self.requested, self.signum, self._first = True, signum, now
            what = "terminated" if signum == signal.SIGTERM else "interrupted"
            print(
                f"\ncnnkit: {what}: stopping after this batch and saving last.pt "
                "(Ctrl-C again to abort)",
                file=sys.stderr,
            )

        signals = (signal.SIGINT, signal.SIGTERM)
        previous = {s: signal.signal(s, handler) for s in signals}
        try:
            yield self
        finally:
            for s, old in previous.items():
                signal.signal(s, old)


class EpochBar:
    """A tqdm bar showing loss, accuracy and images/s; ETA comes from tqdm.

    No bar when stderr is not a terminal (logs, CI): the per-epoch lines remain.
    """

    def __init__(self, total: int, done: int, desc: str) -> None:
        self.bar = tqdm(
            total=total,
            initial=done,
            desc=desc,
            leave=False,
            unit="batch",
            dynamic_ncols=True,
            mininterval=0.5,
            file=sys.stderr,
            disable=None,
        )

    def update(self, p: EpochProgress) -> None:
        if self.bar.disable:
            return
        self.bar.update(p.step - self.bar.n)
        if p.step % 10 == 0 and p.seen:  # on a GPU the totals arrive every few steps
            shown = {"loss": f"{p.loss:.3f}"}
            if "accuracy" in p.sums:
                shown["acc"] = f"{p.accuracy:.1%}"
            self.bar.set_postfix(**shown, img_s=f"{p.images_per_second:,.0f}", refresh=False)

    def close(self) -> None:
        self.bar.close()
