"""What every benchmark shares: the machine and versions it ran on (printed first), and its
``--set KEY=VALUE`` overrides."""

from __future__ import annotations

import datetime
import os
import platform
import random
from pathlib import Path
from typing import Any

import torch
import yaml

SHARED_CIFAR10 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "cifar10"
PENNFUDAN = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "pennfudan"


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


def parse_sets(items: list[str]) -> dict[str, Any]:
    """["epochs=4", "flip=false"] -> {"epochs": 4, "flip": False} (values read as YAML)."""
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        values[key.strip().replace("-", "_")] = yaml.safe_load(value)
    return values


def pennfudan_split(root: Path, test: int, seed: int) -> tuple[Path, Path]:
    """root/train and root/test in Penn-Fudan's own layout, linked to the shared files."""
    names = sorted(p.stem for p in (PENNFUDAN / "PNGImages").glob("*.png"))
    random.Random(seed).shuffle(names)
    parts = {"test": names[:test], "train": names[test:]}
    for part, chosen in parts.items():
        for sub in ("PNGImages", "PedMasks"):
            (root / part / sub).mkdir(parents=True)
        for name in chosen:
            (root / part / "PNGImages" / f"{name}.png").symlink_to(
                PENNFUDAN / "PNGImages" / f"{name}.png"
            )
            (root / part / "PedMasks" / f"{name}_mask.png").symlink_to(
                PENNFUDAN / "PedMasks" / f"{name}_mask.png"
            )
    return root / "train", root / "test"
