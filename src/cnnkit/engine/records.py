"""What a run leaves in its folder besides checkpoints: a row of history.csv per epoch,
metrics.json with the final test of best.pt, report.html and TensorBoard's logs.

A mixin of the Trainer (cnnkit.engine.fit), which owns the attributes these methods read.
"""

from __future__ import annotations

import contextlib
import io
import sys
import time
from typing import Any

from cnnkit.engine import distributed, run_folder
from cnnkit.engine.checkpoint import load_checkpoint, unwrap_model
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Metrics


class RunRecords:
    """The Trainer's records of its run."""

    def _history_row(self, val: Metrics | None) -> dict[str, Any]:
        p = self.progress
        row: dict[str, Any] = {"epoch": self.epoch, "stage": self.stages[self.stage_index].name}
        row.update({f"train_{name}": value for name, value in p.means().items()})
        for name in self.task.metric_names:
            row[f"val_{name}"] = val.values.get(name) if val is not None else None
        row.update(
            lr=self.optimizer.param_groups[-1]["lr"],
            seconds=p.seconds,
            images_per_second=p.images_per_second,
        )
        return row

    def _final_metrics(self, interrupted: bool) -> dict[str, Any]:
        metrics: dict[str, Any] = {
            "task": self.task.name,
            "epochs_done": self.epoch,
            "epochs": self.total_epochs,
            "stages": [stage.name for stage in self.stages],
            "interrupted": interrupted,
            "stopped_early": self.stopped_early,
            "ema": self.cfg.ema or None,
            "lookahead": self.cfg.lookahead or None,
            **self.best_metrics(),
            "validation": self.data.val_source,
            "wall_seconds": round(self.wall_seconds, 2),
            "device": str(self.device),
            "precision": self.precision.name,
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "skipped_images": len(self.data.skipped),
        }
        if self.history:
            metrics["final"] = self.history[-1]
        # airbench's clock: the data-dependent init, the training steps and the final test
        # evaluation; not data loading, per-epoch validation, checkpoints or plots
        timing = {
            "init": round(self.init_seconds, 3),
            "training": round(sum(row["seconds"] for row in self.history), 3),
        }
        test = self.data.test
        if not interrupted and test is not None and len(test) and self.epoch:
            # rank 0 reads best.pt; under torchrun the other ranks (perhaps on other machines)
            # get its weights from rank 0 and test their share
            best = distributed.broadcast(
                load_checkpoint(self.run_dir / "best.pt")["state_dict"] if self.main else None
            )
            unwrap_model(self.model).load_state_dict(best)
            started = time.perf_counter()
            with distributed.sharded_evaluation():
                metrics.update(self.task.test(self.model, self.best_epoch))
            timing["test_evaluation"] = round(time.perf_counter() - started, 3)
        elif not interrupted and self.epoch:
            if self.data.val_source in ("split", "folder", "people"):
                then = (
                    f"`cnnkit evaluate {self.run_dir}` evaluates best.pt on its validation images"
                )
            else:
                then = "it trained on all of it: evaluate with --data on images it has not seen"
            print(f"no test split in {self.cfg.data}: no final test evaluation; {then}")
        metrics["timing"] = {**timing, "timed": round(sum(timing.values()), 3)}
        if self.world > 1:
            metrics["processes"] = self.world
        if self.main:
            run_folder.write_metrics(self.run_dir, metrics)
        if not interrupted:
            epochs = f"{self.epoch} epoch{'s' if self.epoch != 1 else ''}"
            print(f"training took {self.wall_seconds:.1f}s over {epochs}")
        return metrics

    def _write_report(self) -> None:
        """report.html; a failure to draw it costs the page, never the trained run."""
        from cnnkit.report import build_report

        said_out, said_err = io.StringIO(), io.StringIO()
        try:
            with contextlib.redirect_stdout(said_out), contextlib.redirect_stderr(said_err):
                path = build_report(self.run_dir, device=str(self.device))
        except CnnkitError as exc:
            _say_again(said_out, said_err)
            print(f"cnnkit: report.html not written: {exc}")
            return
        _say_again(said_out, said_err)
        print(f"report: {path}")

    def _tensorboard(self) -> Any:
        if not self.cfg.tensorboard:
            return None
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise CnnkitError("--tensorboard needs tensorboard: pip install tensorboard") from None
        return SummaryWriter(log_dir=str(self.run_dir / "tensorboard"))


def _say_again(said_out: io.StringIO, said_err: io.StringIO) -> None:
    """What building the report printed, less its "cnnkit: " notes: the report reads the run's
    data again, and what the reader notes of it (skipped files, how masks were read, which
    split is scored) was said when the run started."""
    for stream, said in ((sys.stdout, said_out), (sys.stderr, said_err)):
        for line in said.getvalue().splitlines():
            if not line.startswith("cnnkit: "):
                print(line, file=stream)
