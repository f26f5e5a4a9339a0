"""Training under torchrun: the process group, this process's rank, and the few collectives the
engine needs. Outside torchrun (no WORLD_SIZE in the environment, or WORLD_SIZE=1) every helper
here is a no-op: rank 0 of a world of 1.
"""

from __future__ import annotations

import torch.distributed as dist


def active() -> bool:
    """Whether a process group of more than one process is running."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return dist.get_rank() if active() else 0


def world_size() -> int:
    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0: the one process that prints, writes the run folder and saves checkpoints."""
    return rank() == 0
