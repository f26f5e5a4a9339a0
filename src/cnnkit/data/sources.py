"""Where images come from: folder splits and CSV lists -> ImageLists (paths, labels, stat info).

Nothing here decodes pixels; it only finds files, assigns labels and records each file's size and
mtime (which key the decode cache). The seeded stratified validation split lives here too.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.data.decode import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError

VAL_FOLDERS = ("val", "valid", "validation")
SPLIT_NAMES = ("train", "val", "test")
_CSV_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class ImageList:
    """Files of one split: absolute paths, class indices (multi-label lists: a 0/1 row per
    file), and (size, mtime_ns) per file."""

    paths: list[str] = field(default_factory=list)
    labels: list = field(default_factory=list)  # int, or list[int] multi-hot
    stats: list[tuple[int, int]] = field(default_factory=list)  # (-1, -1): could not stat
    where: str = ""  # for messages: "train/" or "rows of list.csv marked test"

    def __len__(self) -> int:
        return len(self.paths)

    def add(self, path: str, label: int | list[int], stat: tuple[int, int]) -> None:
        self.paths.append(path)
        self.labels.append(label)
        self.stats.append(stat)


@dataclass
class SourceSplits:
    """The file lists of a folder or CSV dataset, before decoding."""

    classes: list[str]
    lists: dict[str, ImageList]  # "train" / "val" / "test" -> files (absent splits left out)


def _visible(name: str) -> bool:
    return not name.startswith(".")


def _subdirs(folder: str) -> list[str]:
    with os.scandir(folder) as it:
        return sorted(e.name for e in it if _visible(e.name) and e.is_dir())


def _is_dir(entry: os.DirEntry) -> bool:
    """entry.is_dir(), False where it raises (a symbolic link loop: ELOOP): such a name is
    then read as a file, fails to decode, and is listed as skipped."""
    try:
        return entry.is_dir()
    except OSError:
        return False


def _image_files(folder: str) -> list[tuple[str, tuple[int, int]]]:
    """(path, (size, mtime_ns)) of every image-extension file under ``folder``, sorted by path."""
    found: list[tuple[str, tuple[int, int]]] = []
    stack = [folder]
    exts = IMAGE_EXTENSIONS
    while stack:
        current = stack.pop()
        with os.scandir(current) as it:
            for e in it:  # hot loop (60k files for CIFAR-10): keep it to cheap checks
                name = e.name
                if name[0] == ".":
                    continue
                dot = name.rfind(".")
                if dot > 0 and name[dot:].lower() in exts and not _is_dir(e):
                    try:
                        st = e.stat()
                        found.append((e.path, (st.st_size, st.st_mtime_ns)))
                    except OSError:
                        found.append((e.path, (-1, -1)))
                elif _is_dir(e):
                    stack.append(e.path)
    found.sort()
    return found


def _scan_split(folder: str, classes: list[str], where: str) -> ImageList:
    index = {c: i for i, c in enumerate(classes)}
    out = ImageList(where=where)
    for name in _subdirs(folder):
        if name not in index:
            raise CnnkitError(
                f"class folder '{name}' in {where} is not a training class "
                f"(training classes: {', '.join(classes)})"
            )
        files = _image_files(os.path.join(folder, name))
        if not files:
            raise CnnkitError(f"class folder {os.path.join(folder, name)} has no images")
        for path, stat in files:
            out.add(path, index[name], stat)
    return out


_LAYOUT_HELP = (
    "expected ROOT/train/<class>/<images> (with optional ROOT/val/ and ROOT/test/) "
    "or ROOT/<class>/<images>"
)


def scan_folder(root: str | os.PathLike) -> SourceSplits:
    """Find the splits and classes of a folder dataset (see docs/architecture.md)."""
    root = os.path.abspath(os.fspath(root))
    top = _subdirs(root)
    split_dirs: dict[str, str] = {}
    vals = [v for v in VAL_FOLDERS if v in top]
    if len(vals) > 1:
        raise CnnkitError(f"{root} has several validation folders ({', '.join(vals)}); keep one")
    for split, name in (("train", "train"), ("val", vals[0] if vals else None), ("test", "test")):
        if name and name in top:
            split_dirs[split] = os.path.join(root, name)
    if not split_dirs:  # ROOT is itself a folder of class folders
        split_dirs = {"train": root}
    ref = [split_dirs["train"]] if "train" in split_dirs else list(split_dirs.values())
    classes = sorted({c for d in ref for c in _subdirs(d)})
    if not classes:
        raise CnnkitError(f"no class folders found in {ref[0]}: {_LAYOUT_HELP}")
    lists = {}
    for split, folder in split_dirs.items():
        where = f"{os.path.relpath(folder, root)}/" if folder != root else f"{root}/"
        lists[split] = _scan_split(folder, classes, where)
    return SourceSplits(classes, lists)


def _stat(path: str) -> tuple[int, int]:
    try:
        st = os.stat(path)
        return (st.st_size, st.st_mtime_ns)
    except OSError:
        return (-1, -1)


# a header row: a label column named so, or a path column named so (no image is called that)
_LABEL_HEADERS = ("label", "labels", "class", "category", "target", "y")
_PATH_HEADERS = ("path", "file", "filename", "file_name", "filepath", "image", "image_path", "img")


def _csv_rows(csv_path: Path) -> tuple[list[tuple[int, list[str]]], bool]:
    """(line number, cells) of the non-empty rows after an optional header (``path,label``,
    ``filename,class``, ...), and whether the header's second cell says ``labels`` (a
    multi-label list)."""
    with open(csv_path, newline="", encoding="utf-8-sig") as f:
        rows = [(n, [c.strip() for c in r]) for n, r in enumerate(csv.reader(f), 1)]
    rows = [(n, r) for n, r in rows if any(r)]
    first = [c.lower() for c in rows[0][1]] if rows else []
    header = (
        len(first) >= 2
        and (first[1] in _LABEL_HEADERS or first[0] in _PATH_HEADERS)
        # a.png,y is an image labelled y, and so is a file called "image"
        and os.path.splitext(first[0])[1] not in IMAGE_EXTENSIONS
        and not (csv_path.parent / rows[0][1][0]).exists()
    )
    if header:
        rows = rows[1:]
    return rows, header and first[1] == "labels"


def read_csv_list(csv_path: str | os.PathLike) -> SourceSplits:
    """Read ``path,label[,split]`` rows; a header row is detected by its names (a 2nd cell
    ``label``/``class``/..., or a 1st cell ``path``/``filename``/...).

    Multi-label lists (a header ``path,labels``, or any label cell with a ``;``) name each
    image's labels as ``label1;label2``; an empty cell is an image with none of them (all
    negatives). Their labels become multi-hot rows over the sorted label names."""
    csv_path = Path(csv_path).resolve()
    base = csv_path.parent
    rows, multilabel = _csv_rows(csv_path)
    if not rows:
        raise CnnkitError(f"{csv_path} lists no images (expected rows of path,label[,split])")
    multilabel = multilabel or any(len(r) > 1 and ";" in r[1] for _, r in rows)
    entries = []
    for n, r in rows:
        if len(r) not in (2, 3) or not r[0] or not (r[1] or multilabel):
            expected = "path,label1;label2[,split]" if multilabel else "path,label[,split]"
            raise CnnkitError(f"{csv_path} line {n}: expected {expected}, got {r}")
        split = _CSV_SPLITS.get(r[2].lower()) if len(r) == 3 else "train"
        if split is None:
            raise CnnkitError(
                f"{csv_path} line {n}: unknown split '{r[2]}' (use train, val or test)"
            )
        labels = sorted({x.strip() for x in r[1].split(";") if x.strip()}) if multilabel else r[1]
        entries.append((str(base / r[0]), labels, split))
    if multilabel:
        classes = sorted({name for _, names, _ in entries for name in names})
        if not classes:
            raise CnnkitError(f"{csv_path} names no label in any row (path,label1;label2)")
    else:
        classes = sorted({label for _, label, _ in entries})
    index = {c: i for i, c in enumerate(classes)}
    lists: dict[str, ImageList] = {}
    for path, label, split in entries:
        where = f"rows of {csv_path.name}" + ("" if split == "train" else f" marked {split}")
        lst = lists.setdefault(split, ImageList(where=where))
        if multilabel:
            row = [0] * len(classes)
            for name in label:
                row[index[name]] = 1
            lst.add(os.path.normpath(path), row, _stat(path))
        else:
            lst.add(os.path.normpath(path), index[label], _stat(path))
    return SourceSplits(classes, {s: lists[s] for s in SPLIT_NAMES if s in lists})


def stratified_split(
    labels: np.ndarray, val_split: float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Seeded per-class split -> (train indices, val indices), each sorted.

    Each class gives ``round(n * val_split)`` images to validation (at least 1 when it has 2 or
    more, and never all of them), chosen by a ``numpy.random.Generator(seed)`` permutation.
    Multi-hot labels (N, C) have no single class to stratify by: a seeded random split of the
    same size rule over all images.
    """
    labels = np.asarray(labels)
    if labels.ndim == 2:
        labels = np.zeros(len(labels), dtype=np.int64)  # one stratum: a plain random split
    rng = np.random.Generator(np.random.PCG64(seed))
    val_parts = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        n = len(idx)
        k = min(max(1, round(n * val_split)), n - 1) if n >= 2 and val_split > 0 else 0
        val_parts.append(idx[rng.permutation(n)[:k]])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.zeros(0, np.int64)
    mask = np.ones(len(labels), dtype=bool)
    mask[val] = False
    return np.flatnonzero(mask), val
