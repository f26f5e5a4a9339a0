"""Which images an evaluation scores, for every task's predictor: on the run's own data its
own splits (never its training images), elsewhere the data's test split or, for data without
splits, all of it; and where the reports go (evaluation_folder)."""

from __future__ import annotations

import itertools
import os
import sys
import unicodedata
from pathlib import Path
from typing import Any

from cnnkit.data.datasets import data_location
from cnnkit.errors import CnnkitError, did_you_mean

SPLITS = ("train", "val", "test")


def check_split(split: str) -> str:
    if split not in SPLITS:
        raise did_you_mean("split", split, SPLITS)
    return split


def trained_on(data: str | os.PathLike, location: str | None, config: dict[str, Any]) -> bool:
    """True when `data` names the data a run trained on (its recorded absolute path where the
    checkpoint has one, so the working directory does not matter)."""
    if location is not None:
        return data_location(data) == location
    trained = config.get("data")  # a checkpoint from before data_location
    return trained is not None and data_location(data) == data_location(trained)


def choose_split(splits: Any, split: str, own: bool, data: str | os.PathLike) -> tuple[Any, str]:
    """(images, the split they are) from a task's splits (.train .val .test .val_source). On the
    run's own data with no test split its validation images stand in; other data without any
    splits is all evaluation data and other data with only a val split is scored on it (with a
    note), while other data with its own train split but no test split (or an .npz without test
    arrays) is refused; the test split stands in for validation only in the run's own data."""
    chosen, asked = getattr(splits, split), split
    if split == "val" and splits.val_source == "test" and not own:
        chosen = None
    if chosen is None and split == "test":
        if own and splits.val_source in ("split", "folder", "people"):
            chosen, split = splits.val, "val"
        elif own:
            raise CnnkitError(
                f"{data} has no test split and the run trained on all of it: pass --data "
                "with images it has not seen"
            )
        elif only_validation(splits):  # held-out data that is all validation: score it
            chosen, split = splits.val, "val"
        elif splits.val_source == "folder" or str(data).lower().endswith(".npz"):
            # named splits without a test one: its train images are no test
            instead = (
                "--split val to score its validation images"
                if splits.val is not None
                else "--split train to score its training images as held-out data"
            )
            raise CnnkitError(
                f"{data} has no test split (only {', '.join(_present(splits))}): pass "
                f"{instead}, or --data with test images"
            )
        else:
            chosen = splits.train  # a plain folder: evaluate all of it
    unsplit = splits.val_source == "none" and getattr(splits, "test", None) is None
    if chosen is None or len(chosen) == 0:
        scores_all = unsplit and not own and split == "val"
        hint = " (it has no splits: --split test scores all of it)" if scores_all else ""
        raise CnnkitError(f"{data} has no '{split}' images{hint}")
    if not own and split == "train" and unsplit:  # (a held-out folder is all test data)
        print(
            f"cnnkit: scoring all {len(chosen)} images of {data} (it has no val or test split)",
            file=sys.stderr,
        )
    if split != asked:
        said = (
            f"using the {len(chosen)} validation images the run did not train on"
            if own
            else f"scoring its {len(chosen)} validation images (its only split)"
        )
        print(f"cnnkit: {data} has no test split: {said}", file=sys.stderr)
    return chosen, split


def only_validation(splits: Any) -> bool:
    """True when data has validation images and neither test nor training images: held-out
    data whose one usable split is its validation split."""

    def has(name: str) -> bool:
        part = getattr(splits, name, None)
        return part is not None and len(part) > 0

    return has("val") and not has("train") and not has("test")


def choose_split_and_say(
    splits: Any, split: str, own: bool, data: str | os.PathLike
) -> tuple[Any, str, list[tuple[str, str]]]:
    """choose_split, then what the reader noted and skipped of that split, on stderr (never a
    file left out unsaid), and those skipped files: (images, the split they are, skipped)."""
    from cnnkit.tasks.base import print_data_notes
    from cnnkit.tasks.detect.formats.records import skipped_of

    images, split = choose_split(splits, split, own, data)
    # the split whose images these are (a folder without splits is scored whole: its train)
    held = next((name for name in SPLITS if getattr(splits, name, None) is images), split)
    skipped = skipped_of(splits, held)
    print_data_notes(splits, file=sys.stderr, skipped=skipped)
    return images, split, skipped


def _present(splits: Any) -> list[str]:
    return [name for name in SPLITS if getattr(splits, name, None) is not None] or ["none"]


def split_options(config: dict[str, Any], own: bool) -> dict[str, Any]:
    """The val_split and seed a reader needs: the run's own on its own data (so its held-out
    images are the same), none elsewhere."""
    if not own:
        return {"val_split": 0.0, "seed": 0}
    return {"val_split": float(config.get("val_split", 0.1)), "seed": int(config.get("seed", 0))}


def classes_in_our_order(data_classes: list[str], ours: list[str]) -> Any:
    """int64 tensor: per class index of the data, the model's index of that class name; one
    line naming the classes the model does not know."""
    import torch

    # compared in Unicode's composed form: a folder unzipped on a Mac names 'café' decomposed
    index = {unicodedata.normalize("NFC", name): i for i, name in enumerate(ours)}
    data_classes = [unicodedata.normalize("NFC", name) for name in data_classes]
    unknown = [name for name in data_classes if name not in index]
    if unknown:
        quoted = ", ".join(f"'{name}'" for name in unknown[:5])  # a name may hold a comma
        raise CnnkitError(
            f"the data's classes differ from the checkpoint's: {quoted} not among the model's "
            f"{len(ours)} classes ({', '.join(repr(name) for name in ours[:10])})"
        )
    return torch.tensor([index[name] for name in data_classes], dtype=torch.int64)


SOURCE_FILE = "evaluated.txt"  # in an evaluation folder: the data it scored, one line


def _source_of(marker: Path) -> str | None:
    try:
        return marker.read_text(encoding="utf-8").strip() if marker.is_file() else None
    except (OSError, ValueError):  # unreadable: treated as another data's folder
        return None


def evaluation_folder(
    checkpoint: str | os.PathLike,
    data: str | os.PathLike,
    split: str,
    tta: str = "none",
    variant: str = "",
) -> Path:
    """Where an evaluation's reports go by default: eval-<data>-<split>[-tta-<tta>][variant]
    [-<file>] beside the checkpoint (``variant``, e.g. "-iou0.6-vote0": settings other than
    the checkpoint's; ``file``: a checkpoint other than best.pt, such as last.pt or
    best.int8.onnx, so that each model file keeps its own report). A folder holding another
    data's evaluation (data folders of the same name elsewhere) is left alone and the next free
    -2, -3, ... is used; the same data's is replaced. The folder is made, with the data's
    location in evaluated.txt."""
    name = Path(str(data)).name or str(data)
    base = f"eval-{name}-{split}" + ("" if tta == "none" else f"-tta-{tta}") + variant
    if Path(checkpoint).name != "best.pt":
        base += "-" + Path(checkpoint).name.removesuffix(".pt")
    source = data_location(data) or str(data)
    for n in itertools.count(1):
        folder = Path(checkpoint).parent / (base if n == 1 else f"{base}-{n}")
        marker = folder / SOURCE_FILE
        if folder.exists() and _source_of(marker) != source:
            continue  # another data's report, or one from before the marker: kept
        folder.mkdir(parents=True, exist_ok=True)
        marker.write_text(source + "\n")
        return folder
    raise AssertionError("unreachable")


def skipped_line(skipped: list[tuple[str, str]]) -> list[str]:
    """One line saying how many files the evaluation left out, or none."""
    if not skipped:
        return []
    return [f"left out {len(skipped)} file(s) that could not be read or paired (metrics.json)"]


def take_model_classes(splits: Any, classes: list[str], note: str) -> None:
    """Give data that names its classes otherwise (a held-out folder's instance masks: one
    object class by the layout's default name) the model's names, every split, with ``note``
    among the reader's notes (printed with them)."""
    splits.notes.append(note)
    splits.classes = list(classes)
    for part in (splits.train, splits.val, splits.test):
        if part is not None:
            part.classes = list(classes)
