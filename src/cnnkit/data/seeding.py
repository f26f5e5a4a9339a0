"""Seeded use of torch's global CPU RNG, for transforms that draw from it (torchvision v2).

A caller's ``torch.Generator`` decides the randomness: one seed is drawn from it, the global
CPU generator is seeded with that inside ``torch.random.fork_rng``, and the global state (and
CUDA's, which is never touched) is as it was afterwards. The same generator state therefore
replays the same transform, and nothing else in the process sees a changed RNG.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

SEED_RANGE = 2**62


def draw_seed(generator: torch.Generator) -> int:
    """One seed from ``generator`` (a CPU generator), advancing it by one draw."""
    return int(torch.randint(SEED_RANGE, (1,), generator=generator, device="cpu"))


@contextmanager
def global_rng_seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU generator seeded by ``seed``, restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.default_generator.manual_seed(seed)
        yield
