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

from cnnkit.engine import distributed
from cnnkit.engine.loop import EpochProgress

# a second signal sooner than this after the first is the same one delivered twice (a terminal's
# Ctrl-C reaches torchrun's workers directly and again through torchrun), not "abort"
SAME_SIGNAL_SECONDS = 1.0

# where the validation images came from, as the banner says it (a split's val_source)
VAL_SOURCES = {
    "folder": "the data's own",
    "split": "split off",
    "test": "the test split",
    "people": "split off by person",
}


class StopFlag:
    """First Ctrl-C (SIGINT) or SIGTERM (``kill``, ``timeout``, a job scheduler) asks the loop
    to stop after the current batch and save last.pt; a second one aborts."""

    def __init__(self) -> None:
        self.requested = False
        self.signum: int | None = None  # the signal that asked, if one did
        self._first = 0.0  # when it asked (time.monotonic)

    def __call__(self) -> bool:
        return self.requested

    def agreed(self, signum: int) -> None:
        """Under torchrun: another rank was signalled, and all stop; a signal reaching this
        one soon after (torchrun stopping its workers) is the same stop, not an abort."""
        self.requested, self.signum, self._first = True, signum, time.monotonic()

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


class TrainerConsole:
    """The lines a Trainer prints: the run's announcement and recipe, one line per epoch, and
    the progress bar (a mixin of cnnkit.engine.fit.Trainer, which owns what they read)."""

    cfg: Any
    data: Any
    task: Any
    model: Any
    stages: Any
    device: Any
    precision: Any
    run_dir: Any
    world: int
    main: bool
    show_progress: bool
    epoch: int
    total_epochs: int
    steps: int
    progress: EpochProgress

    def _announce(self) -> None:
        d = self.data
        n_params = sum(p.numel() for p in self.model.parameters())
        source = VAL_SOURCES.get(d.val_source, d.val_source)
        val = f"{len(d.val)} val ({source})" if d.val is not None else "no validation"
        test = f", {len(d.test)} test" if d.test is not None else ""
        stages = " then ".join(
            f"{s.name} {s.epochs} epoch{'s' if s.epochs != 1 else ''}" for s in self.stages
        )
        print(
            f"cnnkit: {self.task.model_name()} ({n_params:,} params) on {d.name}: "
            f"{len(d.train)} train, {val}{test}, {len(d.classes)} classes; {self.device} "
            f"{self.precision.name}; {stages}; run folder {self.run_dir}"
        )
        if self.world > 1:
            b = self.cfg.batch_size
            print(
                f"cnnkit: {self.world} processes (torchrun, {distributed.backend()}): batch {b} "
                f"each, {b * self.world} in all; only this process (rank 0) prints and writes"
            )
        print(f"cnnkit: {self._recipe()}")

    def _recipe(self) -> str:
        """The optimiser, augmentation and regularisation in effect, in one line."""
        c = self.cfg
        rate = f"lr {c.lr:g}" + (f", filters {c.muon_lr:g}" if c.optimizer == "muon" else "")
        extras = {
            "weight decay": c.weight_decay,
            "label smoothing": c.label_smoothing,
            "dropout": c.dropout,
            "ema": c.ema,
            "lookahead": c.lookahead,
            "clip grad": c.clip_grad,
            "patience": c.patience,
        }
        regular = ", ".join(f"{k} {v:g}" for k, v in extras.items() if v) or "none"
        before, after = self.task.describe_recipe()
        return (
            f"{c.optimizer} {rate} ({c.schedule}), batch {c.batch_size}; {before}; "
            f"regularisation: {regular}{after}"
        )

    def _print_epoch(self, row: dict[str, Any]) -> None:
        names = [key.removeprefix("train_") for key in row if key.startswith("train_")]
        train = " ".join(_figure(name, row[f"train_{name}"]) for name in names)
        val = " ".join(
            _figure(name, row[f"val_{name}"])
            for name in self.task.metric_names
            if row.get(f"val_{name}") is not None
        )
        val = f"  val {val}" if val else ""
        stage = f" [{row['stage']}]" if len(self.stages) > 1 else ""
        print(
            f"epoch {row['epoch']}/{self.total_epochs}{stage}  train {train}{val}  "
            f"{row['images_per_second']:,.0f} img/s  {row['seconds']:.1f}s",
            flush=True,
        )

    def _bar(self) -> EpochBar | None:
        if not self.show_progress or not self.main:
            return None
        desc = f"epoch {self.epoch + 1}/{self.total_epochs}"
        return EpochBar(self.steps, self.progress.step, desc)


def _figure(name: str, value: float) -> str:
    """A history figure for the console: "acc 91.20%", "loss 0.3120", "map 0.5120"."""
    if name == "accuracy":
        return f"acc {value:.2%}"
    return f"{name} {value:.4f}"
