"""What every benchmark prints first: the machine and versions it ran on."""

from __future__ import annotations

import datetime
import os
import platform
from pathlib import Path

import torch

SHARED_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine_info() -> dict[str, str]:
    info = {
        "date": datetime.date.today().isoformat(),
        "cpu": f"{cpu_name()}, {os.cpu_count()} cores",
        "python": platform.python_version(),
        "torch": torch.__version__,
    }
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name()
    return info


def print_machine() -> dict[str, str]:
    info = machine_info()
    print("  ".join(f"{k}: {v}" for k, v in info.items()), flush=True)
    return info
