"""Face verification measured: pairs from a pairs file (LFW's format) or drawn from a folder
of people, scored by an embedding model with LFW's 10-fold protocol."""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError
from cnnkit.faces.detect import print_several_faces
from cnnkit.tasks.embed.pairs import (
    Pairs,
    accuracy_at,
    read_pairs,
    roc_auc,
    sample_pairs,
    ten_fold_accuracy,
)

PAIRS_FROM_FOLDER = 6000


@dataclass
class VerificationReport:
    """10-fold accuracy (mean, std), ROC AUC, and the accuracy at the model's threshold."""

    accuracy: float
    accuracy_std: float
    auc: float
    pairs: int
    same_pairs: int
    threshold: float | None
    accuracy_at_threshold: float | None
    no_face: list[str] = field(default_factory=list)  # embedded whole: no face was found
    source: str = ""
    out_dir: Path | None = None
    threshold_given: bool = False  # the threshold is the caller's, not the model's
    file_folds: bool = False  # the 10 folds are the pairs file's own (LFW's), not dealt here
    several_faces: list[str] = field(default_factory=list)  # the largest face embedded

    def to_dict(self) -> dict[str, Any]:
        folds = not np.isnan(self.accuracy)
        return {
            "source": self.source,
            "accuracy": self.accuracy if folds else None,
            "accuracy_std": self.accuracy_std if folds else None,
            "auc": None if np.isnan(self.auc) else self.auc,
            "pairs": self.pairs,
            "same_pairs": self.same_pairs,
            "threshold": self.threshold,
            "accuracy_at_threshold": self.accuracy_at_threshold,
            "no_face": len(self.no_face),
            "several_faces": len(self.several_faces),
            "folds": ("file" if self.file_folds else "stratified") if folds else None,
        }

    def show(self) -> None:
        folds = (
            f"accuracy {self.accuracy:.2%} +- {self.accuracy_std:.2%} "
            + ("(the file's folds)" if self.file_folds else "(10 stratified folds)")
            if not np.isnan(self.accuracy)
            else "too few pairs for folds (2 of each kind at least)"
        )
        auc = f", ROC AUC {self.auc:.4f}" if not np.isnan(self.auc) else ""
        print(
            f"verification on {self.pairs} pairs ({self.same_pairs} of one person) of "
            f"{self.source}: {folds}{auc}"
        )
        if self.accuracy_at_threshold is not None:
            whose = "the given" if self.threshold_given else "the model's"
            print(
                f"accuracy at {whose} threshold {self.threshold:.3f}: "
                f"{self.accuracy_at_threshold:.2%}"
            )
        if self.no_face:
            print(f"no face found in {len(self.no_face)} image(s): embedded whole")


def score_pairs(
    embedder: Any,
    paths: list[str],
    pairs: Pairs,
    source: str,
    aligned: bool = False,
    roc: str | os.PathLike | None = None,
    threshold: float | None = None,
) -> VerificationReport:
    """Embed each distinct image once, then score every pair; the accuracy at ``threshold``
    (default: the model's) besides LFW's 10-fold accuracy."""
    given = threshold is not None
    # a given threshold is checked before any embedding
    threshold = embedder.resolve_threshold(threshold) if given else embedder.threshold
    result = embedder.embed(paths, whole_if_no_face=True, aligned=aligned)
    if result.failed:
        name, reason = result.failed[0]
        more = f" (and {len(result.failed) - 1} more)" if len(result.failed) > 1 else ""
        raise CnnkitError(f"{name}: {reason}{more}")
    print_several_faces(result.several)
    vectors = result.embeddings
    scores = np.einsum("nd,nd->n", vectors[pairs.first], vectors[pairs.second])
    mean, std = ten_fold_accuracy(scores, pairs.same, pairs.fold)
    at = accuracy_at(scores, pairs.same, threshold) if threshold is not None else None
    report = VerificationReport(
        mean,
        std,
        roc_auc(scores, pairs.same),
        len(pairs),
        int(pairs.same.sum()),
        threshold,
        at,
        result.whole,
        source,
        threshold_given=given,
        file_folds=pairs.fold is not None,
        several_faces=result.several,
    )
    if roc is not None:
        write_roc(scores, pairs.same, Path(roc))
    return report


def verify_pair_file(
    embedder: Any,
    pairs_file: str | os.PathLike,
    root: str | os.PathLike,
    roc: str | os.PathLike | None = None,
    threshold: float | None = None,
) -> VerificationReport:
    """LFW's protocol on a pairs file whose images lie under ``root``, and the accuracy at
    ``threshold`` (default: the model's)."""
    from cnnkit.tasks.embed.task import aligned_faces

    if threshold is not None:
        embedder.resolve_threshold(threshold)  # a bad one before the images are read
    found = read_pairs(pairs_file, root)
    for note in found.notes:
        print(f"cnnkit: {note}", file=sys.stderr)
    aligned = aligned_faces(str(root)) is not None
    return score_pairs(embedder, found.paths, found.pairs, str(pairs_file), aligned, roc, threshold)


def evaluate_folder(
    embedder: Any,
    data: str | os.PathLike,
    split: str = "test",
    out_dir: str | os.PathLike | None = None,
    **_: Any,
) -> VerificationReport:
    """Verification on pairs drawn from the people of ``data`` (its test split, or for the
    run's own data the people it held out)."""
    from cnnkit.config import TrainConfig
    from cnnkit.data import load_data
    from cnnkit.tasks.embed.task import aligned_faces, identity_splits
    from cnnkit.tasks.evaluation_data import (
        check_split,
        choose_split,
        evaluation_folder,
        trained_on,
    )

    check_split(split)
    own = trained_on(data, embedder.data_location, embedder.config)
    if own:
        cfg = TrainConfig.from_dict({**embedder.config, "data": str(data)})
        splits = identity_splits(cfg)
    else:
        splits = load_data(data, val_split=0.0, progress=False)
    chosen, split = choose_split(splits, split, own, data)
    if chosen.paths is None:
        raise CnnkitError(f"{data}: verification needs image files (a folder per person)")
    pairs = sample_pairs(chosen.labels.numpy(), PAIRS_FROM_FOLDER, seed=0)
    aligned = Path(data).is_dir() and aligned_faces(str(data)) is not None
    roc = None
    if out_dir is None and getattr(embedder, "path", None) is not None:
        out_dir = evaluation_folder(embedder.path, data, split)  # beside the checkpoint
    if out_dir is not None:
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        roc = Path(out_dir) / "roc.png"
    report = score_pairs(embedder, list(chosen.paths), pairs, f"{data} ({split})", aligned, roc)
    if out_dir is not None:
        report.out_dir = Path(out_dir)
        metrics = json.dumps(report.to_dict(), indent=2) + "\n"
        (report.out_dir / "metrics.json").write_text(metrics, encoding="utf-8")
    return report


def write_roc(scores: np.ndarray, same: np.ndarray, path: Path) -> Path:
    """The verification ROC curve (true accept rate against false accept rate) as a PNG."""
    import matplotlib
    import torch
    from torchmetrics.functional.classification import binary_roc

    from cnnkit.tasks.classify.roc import save_roc

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    far, tar, _ = binary_roc(torch.as_tensor(scores).float(), torch.as_tensor(same).long())
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(far.numpy(), tar.numpy(), lw=2)
    return save_roc(fig, ax, path, "verification ROC", legend=False)
