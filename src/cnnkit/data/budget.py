"""The memory budget that decides whether a folder is loaded into memory or streamed.

A folder's decoded size is what the in-memory path would hold: images x 3 x H x W bytes (uint8
at the decode size: --image-size, else the most common stored size) over all its splits. Over
the budget, training streams it. The budget is --memory-budget, else $CNNKIT_MEMORY_BUDGET,
else half of the memory available when the run starts (psutil's `available`): the other half is
left for the model, the optimiser, DataLoader workers and the rest of the machine.
"""

from __future__ import annotations

import os
import re

import psutil

from cnnkit.errors import CnnkitError

MEMORY_BUDGET_ENV = "CNNKIT_MEMORY_BUDGET"
DEFAULT_BUDGET = "50%"
_UNITS = {"": 1, "K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}
_PATTERN = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(%|[KMGT]?)(?:I?B)?\s*$", re.IGNORECASE)


def check_budget(text: str) -> str:
    """`text` if it reads as a budget: bytes with an optional K/M/G/T suffix (binary units:
    8G, 512MiB), or a share of the available memory (30%); else a one-line error."""
    match = _PATTERN.match(str(text))
    if match is None or float(match.group(1)) <= 0:
        raise CnnkitError(
            f"memory budget '{text}' is not a size (e.g. 8G, 512M) or a share of the "
            "available memory (e.g. 50%)"
        )
    if match.group(2) == "%" and float(match.group(1)) > 100:
        raise CnnkitError(f"memory budget '{text}' is over 100% of the available memory")
    return str(text)


def memory_budget(setting: str | None = None) -> tuple[int, str]:
    """(bytes, how it was chosen) of the budget: `setting`, else the environment's, else 50%."""
    text = setting or os.environ.get(MEMORY_BUDGET_ENV) or DEFAULT_BUDGET
    match = _PATTERN.match(check_budget(text))
    assert match is not None
    number, unit = float(match.group(1)), match.group(2).upper()
    # under torchrun every process on this machine holds its own copy of in-memory data
    processes = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    each = f" / {processes} processes" if processes > 1 else ""
    if unit == "%":
        available = psutil.virtual_memory().available
        share = int(available * number / 100) // processes
        return share, f"{number:g}% of the {gib(available)} available{each}"
    return int(number * _UNITS[unit]) // processes, text.strip() + each


def decoded_bytes(images: int, size: tuple[int, int]) -> int:
    """Bytes that `images` RGB uint8 images of (H, W) take in memory."""
    return images * 3 * size[0] * size[1]


def gib(n: int) -> str:
    """A byte count for people: 1.50 GiB, 3.2 MiB, 7 KiB."""
    if n >= 2**30:
        return f"{n / 2**30:.2f} GiB"
    return f"{n / 2**20:.1f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"
