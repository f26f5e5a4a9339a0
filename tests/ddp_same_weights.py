"""Run under torchrun by tests/test_distributed.py: trains through the Trainer in a process
group this script owns, then checks that every rank ends with the same weights (DDP's, or a
GAN's averaged gradients) and prints the largest difference from rank 0 (on rank 0)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch.distributed as dist

from cnnkit.config import TrainConfig
from cnnkit.engine import distributed
from cnnkit.engine.checkpoint import unwrap_model
from cnnkit.engine.fit import Trainer


def main() -> None:
    options, run_dir = json.loads(sys.argv[1]), Path(sys.argv[2])
    dist.init_process_group("gloo")
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        trainer = Trainer(TrainConfig.from_dict(options), run_dir, progress=False)
        trainer.fit()
        state = unwrap_model(trainer.model).state_dict()
        everyone = distributed.gather({k: v.detach().cpu() for k, v in state.items()})
        if distributed.is_main():
            worst = max(
                float((other[k].float() - everyone[0][k].float()).abs().max())
                for other in everyone[1:]
                for k in other
            )
            print(f"max difference between ranks: {worst}")
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
