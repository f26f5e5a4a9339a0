"""The run folder a person opens: config.yaml, classes.txt, history.csv, metrics.json, curves."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import yaml

# a classifier's columns; other tasks add their own loss items and metrics (history_fields)
HISTORY_FIELDS = [
    "epoch",
    "stage",
    "train_loss",
    "train_accuracy",
    "val_loss",
    "val_accuracy",
    "lr",
    "seconds",
    "images_per_second",
]


def history_fields(history: list[dict[str, Any]]) -> list[str]:
    """The columns of history.csv: every key of the rows, in the order they first appear."""
    fields: dict[str, None] = {}
    for row in history:
        fields.update(dict.fromkeys(row))
    return list(fields) or list(HISTORY_FIELDS)


def new_run_dir(project: str | os.PathLike, name: str | None, model_name: str) -> Path:
    """runs/<name>, or runs/<model>, <model>-2, ... when no name is given (never overwrites)."""
    project = Path(project)
    if name:
        run_dir = project / name
        if run_dir.exists() and any(run_dir.iterdir()):
            from cnnkit.errors import CnnkitError

            raise CnnkitError(
                f"run folder {run_dir} already exists; choose another --name or --resume it"
            )
        run_dir.mkdir(parents=True, exist_ok=True)
        return run_dir
    base = re.sub(r"[^A-Za-z0-9_.-]+", "-", model_name).strip("-") or "run"
    for i in range(1, 100_000):
        run_dir = project / (base if i == 1 else f"{base}-{i}")
        try:
            run_dir.mkdir(parents=True)
            return run_dir
        except FileExistsError:
            continue
    raise RuntimeError("no free run folder name")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_run_files(run_dir: Path, config: dict[str, Any], classes: list[str]) -> None:
    write_text_atomic(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_text_atomic(run_dir / "classes.txt", "\n".join(classes) + "\n")


def write_history(run_dir: Path, history: list[dict[str, Any]]) -> None:
    fields = history_fields(history)
    lines = [",".join(fields)]
    for row in history:
        lines.append(",".join(_fmt(row.get(k, "")) for k in fields))
    write_text_atomic(run_dir / "history.csv", "\n".join(lines) + "\n")


def write_metrics(run_dir: Path, metrics: dict[str, Any]) -> None:
    write_text_atomic(run_dir / "metrics.json", json.dumps(metrics, indent=2) + "\n")


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def plot_history(
    run_dir: Path,
    history: list[dict[str, Any]],
    best_epoch: int | None = None,
    val_label: str = "validation",
    score_name: str = "accuracy",
) -> Path | None:
    """curves.png: training vs validation loss and score (accuracy, mAP) per epoch (overfitting
    made visible), with the epoch best.pt holds marked; a curve a task does not record (a
    detector's validation loss, its training mAP) is left out."""
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    epochs = [int(row["epoch"]) for row in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    # a task without one "loss" (a GAN: d_loss, g_loss) gets a curve per loss item
    named = [k.removeprefix("train_") for k in history[0] if k.startswith("train_")]
    losses = [k for k in named if k.endswith("loss")] if "loss" not in named else []
    losses = losses or ["loss"]
    for ax, keys in ((ax_loss, losses), (ax_acc, [score_name])):
        for key in keys:
            for prefix, label in (("train", "training"), ("val", val_label)):
                values = [row.get(f"{prefix}_{key}") for row in history]
                if any(v is not None and v != "" for v in values):
                    shown = [float(v) if v not in (None, "") else float("nan") for v in values]
                    ax.plot(
                        epochs, shown, "o-", label=label if len(keys) == 1 else f"{label} {key}"
                    )
        key = keys[0] if len(keys) == 1 else "losses"
        if best_epoch:
            ax.axvline(
                best_epoch, color="gray", linestyle="--", label=f"best.pt (epoch {best_epoch})"
            )
        ax.set_xlabel("epoch")
        if len(epochs) <= 12:
            ax.set_xticks(epochs)
        else:
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path = run_dir / "curves.png"
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
