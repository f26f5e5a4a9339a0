"""Training: the loop, optimisers and schedules, checkpoints, and the run folder."""

from cnnkit.train.checkpoint import load_checkpoint, save_checkpoint
from cnnkit.train.trainer import RunResult, Trainer, train

__all__ = ["RunResult", "Trainer", "load_checkpoint", "save_checkpoint", "train"]
