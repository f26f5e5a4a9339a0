"""The Trainer: the whole training run of any task, resumable after Ctrl-C (cnnkit.engine.start
has `train()`, which makes one; run_state.py its checkpoints; records.py its history, metrics
and report; console.py its printed lines).

The Trainer knows no task. It owns the device and precision, the stages and their optimisers
and schedules, the epoch loop, EMA and lookahead, early stopping, checkpoints and exact resume,
Ctrl-C / SIGTERM, the run folder and the console; the task (cnnkit.tasks) brings the data, the
model, one step's losses, the metrics whose `score` picks best.pt, and the final test.
"""

from __future__ import annotations

import dataclasses
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnkit.config import TrainConfig
from cnnkit.data.datasets import data_location
from cnnkit.engine import distributed, run_folder
from cnnkit.engine.checkpoint import unwrap_model
from cnnkit.engine.console import EpochBar, StopFlag, TrainerConsole
from cnnkit.engine.device import Precision, resolve_device, resolve_precision, tune_backend
from cnnkit.engine.early_stopping import EarlyStopping
from cnnkit.engine.ema import ModelEMA
from cnnkit.engine.lookahead import Lookahead
from cnnkit.engine.loop import EpochProgress, Optimization, run_epoch
from cnnkit.engine.optim import build_optimizer, build_scheduler
from cnnkit.engine.records import RunRecords
from cnnkit.engine.run_state import MAIN, RunState
from cnnkit.engine.stages import apply_stage, plan_stages, stage_at
from cnnkit.errors import CnnkitError
from cnnkit.tasks.base import Task, make_task

STOP_CHECK_EVERY_GPU = 10  # torchrun on GPUs: steps between the ranks' agreements to go on


@dataclass
class RunResult:
    """Where a run wrote its files and what it measured."""

    run_dir: Path
    metrics: dict[str, Any]
    history: list[dict[str, Any]] = field(default_factory=list)
    interrupted: bool = False
    stopped_by: int | None = None  # the signal that interrupted it (SIGINT, SIGTERM)

    @property
    def best(self) -> Path:
        return self.run_dir / "best.pt"

    @property
    def last(self) -> Path:
        return self.run_dir / "last.pt"


def start_epoch(model: nn.Module, epoch: int) -> None:
    """Call the model's optional `start_epoch(epoch)` hook before training epoch `epoch`
    (0-based, over the run; e.g. fastnet freezes its whitening bias after a few epochs)."""
    hook = getattr(unwrap_model(model), "start_epoch", None)
    if callable(hook):
        hook(epoch)


class Trainer(RunState, RunRecords, TrainerConsole):
    """One training run of any task. `cnnkit.engine.train()` is the usual entry point."""

    def __init__(
        self, cfg: TrainConfig, run_dir: Path, progress: bool = True, resuming: bool = False
    ) -> None:
        self.cfg = cfg
        self.run_dir = run_dir
        self.show_progress = progress
        self.device = distributed.local_device(resolve_device(cfg.device))
        self.precision = Precision(self.device, resolve_precision(cfg.precision, self.device))
        tune_backend(self.device)
        # under torchrun: every rank builds the same model from the same seed and draws the
        # same order of the data; --batch-size is each process's, the task batches globally
        self.world = distributed.world_size()
        self.main = distributed.is_main()
        torch.manual_seed(cfg.seed)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.channels_last = cfg.channels_last and self.device.type != "mps"
        task_cfg = cfg
        if self.world > 1:
            task_cfg = dataclasses.replace(cfg, batch_size=cfg.batch_size * self.world)
        self.task: Task = make_task(task_cfg, self.device, self.precision, self.channels_last)
        # a choice about the data every rank must share (stream it or hold it in memory)
        plan_data = getattr(self.task, "plan_data", None)
        if callable(plan_data):
            self.task.data_plan = distributed.decided_by_main(plan_data)
        # rank 0 first: it may write the decoded cache that the others then read
        distributed.main_first(lambda: self.task.load_data(progress and self.main))
        self.data = self.task.data
        self.data_location = data_location(cfg.data)  # recorded in every checkpoint
        self.model = self.task.build(resuming)
        if self.world > 1:
            self.model = self._distributed_batchnorm(self.model)
            # the ranks' own random draws (dropout) differ from here on
            torch.manual_seed(cfg.seed + 1_000_003 * distributed.rank())
        self.steps = self.task.steps_per_epoch()
        self.stages = plan_stages(cfg, self.model)
        self.total_epochs = sum(stage.epochs for stage in self.stages)
        # one Optimization per name: "model" for a task with one network; a task with
        # `optimizer_groups` (a GAN: "D", "G") gets one per name, each its own optimiser,
        # schedule and GradScaler (scalers live for the run, optimisers for a stage)
        self.optimizations: dict[str, Optimization] = {}
        self.scalers: dict[str, torch.amp.GradScaler] = {}
        self.ema = ModelEMA(self.model, cfg.ema) if cfg.ema else None
        # pulls every 5 steps, or every epoch's last step when epochs are shorter
        self.lookahead = (
            Lookahead(cfg.lookahead, every=min(5, self.steps)) if cfg.lookahead else None
        )
        self.early: EarlyStopping | None = None  # set on entering the last stage
        self.stopped_early = False
        self.stage_index = -1
        self.epoch = 0  # epochs fully done, over all stages
        self.progress = EpochProgress()
        self.history: list[dict[str, Any]] = []
        self.best_score: float | None = None  # best.pt's validation score (None: no validation)
        self.best_epoch = 0
        self.wall_seconds = 0.0
        self.stop = StopFlag()
        self._stop_checks = 0  # torchrun: steps since the ranks last agreed on stopping
        self._compiled: dict[int, nn.Module] = {}  # --compile: module id -> compiled module
        self._parallel: dict[tuple, nn.Module] = {}  # torchrun: DDP per module and trainable set

    @property
    def init_seconds(self) -> float:
        return self.task.init_seconds

    # ---- stages --------------------------------------------------------------------------------
    def enter_stage(self, index: int) -> None:
        """Freeze/unfreeze for the stage; a fresh optimiser and schedule for its epochs."""
        stage = self.stages[index]
        self.stage_index = index
        groups = apply_stage(self.model, stage)
        named = getattr(self.task, "optimizer_groups", None)
        by_name = named(self.model, stage) if callable(named) else {MAIN: groups}
        self.optimizations = {}
        for name, name_groups in by_name.items():
            optimizer = build_optimizer(name_groups, self.cfg)
            self.optimizations[name] = Optimization(
                optimizer,
                build_scheduler(optimizer, self.cfg, self.steps, stage.epochs),
                self.scalers.setdefault(name, self.precision.make_scaler()),
                self.precision,
                self.cfg.clip_grad,
                # several networks run in turn in a step (a GAN): no DDP wrapper fits them,
                # so each update averages its gradients over the ranks itself
                sync=distributed.average_gradients if self.world > 1 and callable(named) else None,
            )
        if self.cfg.patience and index == len(self.stages) - 1:
            # counted in the last stage only: a plateau of the head must not skip fine-tuning
            self.early = EarlyStopping(self.cfg.patience)
        self.task.enter_stage(self.model, stage)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        """The (first) optimisation's optimiser: the only one unless the task names several."""
        return next(iter(self.optimizations.values())).optimizer

    @property
    def scheduler(self) -> torch.optim.lr_scheduler.LRScheduler:
        return next(iter(self.optimizations.values())).scheduler

    @property
    def scaler(self) -> torch.amp.GradScaler:
        return self.scalers.get(MAIN) or next(iter(self.scalers.values()))

    @property
    def single(self) -> bool:
        """One optimisation (every task but a GAN): last.pt keeps format 2's plain fields."""
        return list(self.optimizations) == [MAIN]

    def trained_module(self, averaged: bool = False) -> nn.Module:
        """What trains (or, averaged, what is evaluated: the EMA when on), compiled if asked;
        under torchrun what trains is wrapped in DistributedDataParallel (what is evaluated
        never is: each rank evaluates its own share)."""
        model = self.ema.module if averaged and self.ema is not None else self.model
        module = self.task.trained_module(model)
        named = callable(getattr(self.task, "optimizer_groups", None))
        if self.world > 1 and not averaged and not named:
            # DDP registers the trainable parameters once: a stage, or a model's own
            # start_epoch hook (fastnet stops training its whitening bias), needs a new wrapper
            trains = tuple(p.requires_grad for p in module.parameters())
            key = (id(module), trains)
            if key not in self._parallel:
                for old in self._parallel.values():  # (its id may be reused by the new one)
                    self._compiled.pop(id(old), None)
                self._parallel = {key: distributed.wrap(module, self.device)}
            module = self._parallel[key]
        return self._maybe_compiled(module)

    def _distributed_batchnorm(self, model: nn.Module) -> nn.Module:
        """--sync-bn: SyncBatchNorm (CUDA): statistics over the global batch at every step.
        Otherwise each rank normalises by its own share, and the running statistics are
        averaged over the ranks at each epoch's end."""
        if not self.cfg.sync_bn:
            return model
        if self.device.type != "cuda":
            raise CnnkitError(
                "--sync-bn needs CUDA GPUs; on the CPU the BatchNorm statistics are averaged "
                "across the processes at each epoch's end"
            )
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def _maybe_compiled(self, module: nn.Module) -> nn.Module:
        """With --compile, the module's torch.compile wrapper (made once, sharing its weights;
        checkpoints store the plain module's state)."""
        if not self.cfg.compile:
            return module
        if id(module) not in self._compiled:
            # static shapes: the short last batch gets its own graph instead of making every
            # batch go through a dynamic-shape one
            self._compiled[id(module)] = torch.compile(module, dynamic=False)
        return self._compiled[id(module)]

    def _should_stop(self) -> bool:
        """Whether to stop before the next step: Ctrl-C or SIGTERM, or the time limit. Under
        torchrun every rank asks the others (every step on the CPU, every few on a GPU, where
        the exchange would stall the queue), so all stop at the same step: a signal on any rank,
        or a loss no longer finite on any rank, stops them all."""
        if self.world == 1:
            return self.stop() or self.out_of_time()
        self._stop_checks += 1
        if self.device.type != "cpu" and self._stop_checks % STOP_CHECK_EVERY_GPU:
            return False
        return self._agree_to_stop()

    def _agree_to_stop(self) -> bool:
        """The ranks' one decision: stop if any rank was signalled, ran out of time or
        diverged (also held once after every epoch, so a signal after the epoch's last
        agreement still reaches every rank before any of them acts on it)."""
        requested = self.stop()
        signum = self.stop.signum or (int(signal.SIGINT) if requested else 0)
        local = [float(signum), float(self.out_of_time()), float(not self.progress.finite)]
        signum, timed, diverged = distributed.agree(local)
        if signum and not self.stop.requested:
            self.stop.agreed(int(signum))
        return bool(signum or timed or diverged)

    def _sum_progress(self) -> None:
        """Under torchrun: the epoch's running totals over every rank's share (the seconds are
        the slowest rank's), so history and last.pt hold the whole batch's figures."""
        if self.world == 1:
            return
        p = self.progress
        totals = distributed.sum_values(
            {**{f"sum:{k}": v for k, v in p.sums.items()}, "seen": p.seen}
        )
        p.sums = {name: totals[f"sum:{name}"] for name in p.sums}
        p.seen = int(totals["seen"])
        p.seconds = distributed.agree([p.seconds])[0]

    def _after_step(self, bar: EpochBar | None) -> Callable[[EpochProgress], None]:
        def after_step(progress: EpochProgress) -> None:
            if self.lookahead is not None:
                step = self.epoch * self.steps + progress.step
                self.lookahead.step(self.model, step, self.total_epochs * self.steps)
            if self.ema is not None:
                self.ema.update(self.model)
            if bar is not None:
                bar.update(progress)

        return after_step

    # ---- the run -------------------------------------------------------------------------------
    def fit(self) -> RunResult:
        if self.main:
            run_folder.write_run_files(self.run_dir, self.cfg.to_dict(), list(self.data.classes))
        writer = self._tensorboard() if self.main else None
        self._announce()
        with self.stop.installed():
            try:
                interrupted = self._epochs(writer)
            except Exception as exc:
                error = _compile_error(exc) if self.cfg.compile else None
                if error is None and self.world > 1 and distributed.is_communication_error(exc):
                    error = CnnkitError(
                        f"process {distributed.rank()} of {self.world} lost contact with the "
                        f"others ({distributed.first_line(exc)}); {self._kept()}"
                    )
                if error is None:
                    raise
                raise error from None
        if writer is not None:
            writer.close()
        metrics = self._final_metrics(interrupted)
        if self.cfg.report and not interrupted and self.epoch and self.main:
            self._write_report()
        return RunResult(self.run_dir, metrics, self.history, interrupted, self.stop.signum)

    def _epochs(self, writer: Any) -> bool:
        """Train the remaining epochs; True when Ctrl-C interrupted them (last.pt is saved)."""
        while self.epoch < self.total_epochs:
            started = time.perf_counter()
            index, _, _ = stage_at(self.stages, self.epoch)
            if index != self.stage_index:
                self.enter_stage(index)
            # after enter_stage, whose optimiser takes what trains at the stage's start
            start_epoch(self.model, self.epoch)
            module = self.trained_module()
            step, make_batches = self.task.epoch(module, self.epoch, self.progress)
            bar = self._bar()
            opt = self.optimizations[MAIN] if self.single else self.optimizations
            if self.world > 1 and not getattr(self.task, "shards_batches", False):
                # at least 2 images a rank (BatchNorm trains on no fewer), as a stream drops
                make_batches = distributed.sharded(make_batches)
            run_epoch(
                step,
                make_batches,
                opt,
                self.generator,
                self.progress,
                self.device,
                should_stop=self._should_stop,
                on_step=self._after_step(bar),
                stop_on_non_finite=self.world == 1,
            )
            if bar:
                bar.close()
            if self.world > 1:
                self._agree_to_stop()
            self._sum_progress()
            self.wall_seconds += time.perf_counter() - started
            if not self.progress.finite:
                raise self._diverged()
            if self.stop.requested:
                self.save_last()
                return True
            timed_out = self.out_of_time()
            self._end_epoch(writer)
            if self.stopped_early:
                break
            if timed_out:
                print(f"time limit: {self.cfg.time_limit:g} minutes of training reached")
                break
        return False

    def out_of_time(self) -> bool:
        """--time-limit: the training steps (not evaluation or checkpoints) have used up the
        minutes given; the epoch in progress ends at the next step boundary as the last one."""
        if not self.cfg.time_limit:
            return False
        spent = sum(row["seconds"] for row in self.history) + self.progress.seconds
        return spent >= 60.0 * self.cfg.time_limit

    def _kept(self) -> str:
        return (
            f"{self.run_dir} keeps the checkpoints of epoch {self.epoch}"
            if (self.run_dir / "last.pt").is_file()
            else "no epoch finished, so nothing was saved"
        )

    def _diverged(self) -> CnnkitError:
        """The one line for a loss that became NaN or infinite: training stops before those
        weights reach a checkpoint, so last.pt and best.pt keep the last finite epoch's."""
        kept = self._kept()
        return CnnkitError(
            f"training diverged in epoch {self.epoch + 1}: the running mean of "
            f"{self.progress.first_non_finite()}; lower --lr or clip the gradients "
            f"(--clip-grad 10); {kept}"
        )

    def _end_epoch(self, writer: Any) -> None:
        started = time.perf_counter()
        if self.lookahead is not None:  # evaluate and save the slow weights
            self.lookahead.sync(self.model)
        self.epoch += 1
        # each rank measured BatchNorm's statistics on its own share: average them
        distributed.average_buffers(self.model)
        if self.ema is not None:
            distributed.average_buffers(self.ema.module)
        with distributed.sharded_evaluation():
            val = self.task.evaluate(self.trained_module(averaged=True), "val")
        # rank 0's figures decide best.pt and early stopping on every rank (a detector's mAP,
        # evaluated on each rank, could tie differently with different kernels)
        val = distributed.broadcast(val)
        row = self._history_row(val)
        self.history.append(row)
        # with validation images, best.pt is the best score's epoch; without, the latest
        score = val.score if val is not None else None
        if score is None or self.best_score is None or val.better(score, self.best_score):
            self.best_score, self.best_epoch = score, self.epoch
            self.save_best()
        # early stopping watches the validation score; without validation the training score
        # (a classifier's accuracy), or the training loss where training has no score (mAP)
        if score is not None:
            watched = score if val.higher_is_better else -score
        elif self.task.score_name in self.progress.sums:
            watched = self.progress.mean(self.task.score_name)
        else:
            watched = -self.progress.loss
        if self.early is not None and self.early.step(watched):
            self.stopped_early = True
        self.progress = EpochProgress()
        after_epoch = getattr(self.task, "after_epoch", None)
        if callable(after_epoch) and self.main:  # per-epoch pictures (a GAN's fixed-noise grid)
            after_epoch(self.trained_module(averaged=True), self.epoch, self.run_dir)
        self.wall_seconds += time.perf_counter() - started
        self.save_last()
        self._print_epoch(row)
        if self.stopped_early:
            print(
                f"early stopping: no improvement for {self.cfg.patience} epochs; best.pt holds "
                f"epoch {self.best_epoch}"
            )
        if not self.main:
            return
        run_folder.write_history(self.run_dir, self.history)
        labels = {
            "test": "validation (the test split)",
            "split": "validation (held out)",
            "people": "validation (held-out people)",
        }
        val_label = labels.get(self.data.val_source, "validation")
        run_folder.plot_history(
            self.run_dir, self.history, self.best_epoch, val_label, self.task.score_name
        )
        if writer is not None:
            for key, value in row.items():
                if isinstance(value, float):
                    writer.add_scalar(key, value, self.epoch)
            writer.flush()


def _compile_error(exc: Exception) -> CnnkitError | None:
    """A torch.compile failure (no C++ compiler, an unsupported op) as one line; None for any
    other error."""
    from torch._dynamo.exc import BackendCompilerFailed, TorchDynamoException

    if isinstance(exc, (BackendCompilerFailed, TorchDynamoException)):
        cause = getattr(exc, "inner_exception", None) or exc  # older torch wraps the cause
        text = str(cause).strip()
        first = text.splitlines()[0] if text else type(cause).__name__
        return CnnkitError(f"--compile failed ({first[:200]}); train without --compile")
    return None
