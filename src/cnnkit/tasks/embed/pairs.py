"""Face verification's measures: pairs of images (same person or not), the similarity
threshold that separates them best, and LFW's protocol (10 folds, each scored with the
threshold the other nine chose).

The threshold search is a sort and two cumulative sums (exact, over every distinct score);
sklearn's roc_curve would give the same points, and ROC AUC comes from torchmetrics.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np
import torch

from cnnkit.errors import CnnkitError

FOLDS = 10


@dataclass
class Pairs:
    """Index pairs into one set of images and whether each pair shows one person;
    ``fold`` numbers 0..9 when the pairs come in folds (LFW's file), else None."""

    first: np.ndarray
    second: np.ndarray
    same: np.ndarray  # bool
    fold: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.same.size)


def sample_pairs(labels: np.ndarray, max_pairs: int = 6000, seed: int = 0) -> Pairs:
    """Distinct pairs drawn person by person, as LFW's are: half of one person (a person with
    two or more images chosen uniformly, then two of their images), half of two different
    people (two people chosen uniformly, one image each); at most ``max_pairs`` and no more
    pairs of one person than exist. No pair is drawn twice (a repeated pair could sit both in
    the folds that choose a threshold and in the one it is scored on). A fixed seed gives the
    same pairs every epoch."""
    labels = np.asarray(labels).reshape(-1)
    people = np.unique(labels)
    images = {p: np.flatnonzero(labels == p) for p in people.tolist()}
    several = [p for p, idx in images.items() if idx.size >= 2]
    if not several or people.size < 2:
        raise CnnkitError("verification needs two people, one of them with two or more images")
    existing = sum(images[p].size * (images[p].size - 1) // 2 for p in several)
    half = max(1, min(max_pairs // 2, existing))
    rng = np.random.default_rng(seed)

    def two_people() -> tuple[int, int]:
        p, q = rng.choice(people, 2, replace=False)
        return int(rng.choice(images[int(p)])), int(rng.choice(images[int(q)]))

    same_pairs = _one_person_pairs({p: images[p] for p in several}, half, max_pairs, rng)
    n = labels.size
    different = _distinct(two_people, half, n * (n - 1) // 2 - existing)
    pairs = same_pairs + different
    same = np.arange(len(pairs)) < len(same_pairs)
    return Pairs(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]), same)


def _one_person_pairs(
    images: dict[int, np.ndarray], wanted: int, max_pairs: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """``wanted`` distinct pairs of one person each: a person chosen uniformly among those with
    a pair left, then one of their unused pairs. A person with few pairs has them listed and
    shuffled; one with many more than could be wanted (over 4 x max_pairs) is drawn from at
    random, a repeat drawn again (rare there), so no person's pairs are ever all listed."""
    left = {p: idx.size * (idx.size - 1) // 2 for p, idx in images.items()}
    # decided once: a large person keeps far more pairs than can be taken, never listed
    large = {p: n > 4 * max_pairs for p, n in left.items()}
    listed: dict[int, list[tuple[int, int]]] = {}
    taken: set[tuple[int, int]] = set()
    open_people = [p for p in images if left[p] > 0]
    found: list[tuple[int, int]] = []
    while len(found) < wanted and open_people:
        k = int(rng.integers(len(open_people)))
        person = open_people[k]
        if large[person]:
            while True:
                a, b = sorted(int(v) for v in rng.choice(images[person], 2, replace=False))
                if (a, b) not in taken:
                    break
        else:
            if person not in listed:
                every = list(combinations(images[person].tolist(), 2))
                listed[person] = [every[i] for i in rng.permutation(len(every))]
            a, b = listed[person].pop()
        taken.add((a, b))
        found.append((a, b))
        left[person] -= 1
        if left[person] == 0:
            open_people[k] = open_people[-1]
            open_people.pop()
    return found


def _distinct(draw, wanted: int, available: int) -> list[tuple[int, int]]:
    """Up to ``wanted`` distinct pairs of two people from ``draw()`` (a pair and its reverse
    are one), with a bounded number of tries: fewer when they run out or keep repeating."""
    found: dict[tuple[int, int], None] = {}
    wanted = min(wanted, available)
    for _ in range(20 * wanted + 100):
        if len(found) >= wanted:
            break
        a, b = draw()
        found.setdefault((min(a, b), max(a, b)), None)
    return [(a, b) for a, b in found]


def best_threshold(scores: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(threshold, accuracy): "same person" when the score is above the threshold; the
    threshold lies halfway between two neighbouring distinct scores."""
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    same = np.asarray(same, dtype=bool).reshape(-1)
    order = np.argsort(scores, kind="stable")
    s, y = scores[order], same[order]
    n = s.size
    below_diff = np.concatenate([[0], np.cumsum(~y)])  # k lowest called "different"
    below_same = np.concatenate([[0], np.cumsum(y)])
    correct = below_diff + (y.sum() - below_same)
    valid = np.ones(n + 1, dtype=bool)
    valid[1:n] = s[1:] != s[:-1]  # never split ties
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        threshold = s[0] - 1e-6
    elif k == n:
        threshold = s[-1] + 1e-6
    else:
        threshold = (s[k - 1] + s[k]) / 2
    return float(threshold), float(correct[k] / max(n, 1))


def accuracy_at(scores: np.ndarray, same: np.ndarray, threshold: float) -> float:
    return float(np.mean((np.asarray(scores) > threshold) == np.asarray(same, dtype=bool)))


def ten_fold_accuracy(
    scores: np.ndarray, same: np.ndarray, fold: np.ndarray | None = None, seed: int = 0
) -> tuple[float, float]:
    """LFW's protocol: (mean, std) over 10 folds of the accuracy on each fold at the threshold
    chosen on the other nine. Without given folds, pairs are dealt into stratified folds (as
    many as the rarer kind of pair allows, up to 10); with fewer than 2 pairs of each kind
    there are no folds to score, and both figures are NaN."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same, dtype=bool)
    if fold is None:
        folds = min(FOLDS, int(same.sum()), int((~same).sum()))
        if folds < 2:
            return float("nan"), float("nan")
        fold = np.empty(same.size, dtype=np.int64)
        rng = np.random.default_rng(seed)
        for value in (True, False):
            idx = rng.permutation(np.flatnonzero(same == value))
            fold[idx] = np.arange(idx.size) % folds
    accuracies = []
    for k in np.unique(fold):
        held = fold == k
        threshold, _ = best_threshold(scores[~held], same[~held])
        accuracies.append(accuracy_at(scores[held], same[held], threshold))
    return float(np.mean(accuracies)), float(np.std(accuracies))


def roc_auc(scores: np.ndarray, same: np.ndarray) -> float:
    """ROC AUC of "same person" against the score; NaN unless both kinds of pair are there."""
    from torchmetrics.functional.classification import binary_auroc

    same = np.asarray(same, dtype=bool)
    if same.all() or not same.any():
        return float("nan")

    return float(
        binary_auroc(torch.as_tensor(scores, dtype=torch.float64), torch.as_tensor(same).long())
    )


@dataclass
class PairFile:
    """LFW's pairs.txt read against a root folder: the distinct image paths and the pairs
    as indices into them."""

    paths: list[str]
    pairs: Pairs
    notes: list[str] = field(default_factory=list)  # e.g. a folds header the pairs belie


_HEADER = re.compile(r"^\s*(\d+)\s+(\d+)\s*$")
# LFW's images are .jpg; an aligned or converted copy may hold another format
PAIR_SUFFIXES = (".jpg", ".png", ".jpeg", ".JPG", ".PNG", ".JPEG", ".bmp", ".webp", ".pgm")


def pair_image(root: Path, name: str, number: int) -> Path:
    """``root/name/name_%04d`` with the first of PAIR_SUFFIXES that exists (.jpg when none
    does: the one a missing-file error names)."""
    stem = root / name / f"{name}_{number:04d}"
    for suffix in PAIR_SUFFIXES:
        candidate = stem.with_name(stem.name + suffix)
        if candidate.is_file():
            return candidate
    return stem.with_name(stem.name + ".jpg")


def _fields(line: str) -> list[str]:
    """A pairs line's fields: split on tabs when that gives a pair's 3 or 4 fields (LFW's own
    layout), so a name may hold spaces ("Jean Paul\t1\t3"); else on any whitespace, so a
    stray tab in a space-separated line reads as before."""
    if "\t" in line:
        tabbed = [part.strip() for part in line.split("\t") if part.strip()]
        if len(tabbed) in (3, 4):
            return tabbed
    return line.split()


def read_pairs(path: str | os.PathLike, root: str | os.PathLike) -> PairFile:
    """Read LFW's pairs format: ``name i j`` (one person) and ``name1 i name2 j`` (two), the
    fields separated by tabs (a name may then hold spaces) or by any whitespace, image
    ``ROOT/name/name_%04d.jpg`` (or another image suffix: ``cnnkit faces align`` writes
    .png); an optional first line ``folds n`` (n same and n different
    pairs per fold, in order) gives LFW's own folds, and a first line ``n`` (pairsDevTrain.txt,
    pairsDevTest.txt: n same, then n different pairs) is one set without folds."""
    file, root = Path(path), Path(root)
    if not file.is_file():
        raise CnnkitError(f"pairs file not found: {file}")
    if not root.is_dir():
        raise CnnkitError(f"image folder not found: {root}")
    try:
        lines = file.read_text(encoding="utf-8-sig").splitlines()  # a BOM is no name
    except (OSError, UnicodeDecodeError) as exc:
        raise CnnkitError(f"{file} cannot be read as a text pairs file ({exc})") from None
    per_fold, folds = None, 0
    numbered = list(enumerate(lines, 1))
    if numbered and _HEADER.match(numbered[0][1]) and len(numbered[0][1].split()) == 2:
        folds, n = (int(v) for v in numbered[0][1].split())
        per_fold = 2 * n if folds > 0 and n > 0 else None
        numbered = numbered[1:]
    elif numbered and numbered[0][1].strip().isdigit():  # pairsDevTrain/DevTest's "n": one fold
        numbered = numbered[1:]
    index: dict[str, int] = {}
    first, second, same = [], [], []
    for line_no, line in numbered:
        parts = _fields(line)
        if not parts:
            continue
        try:
            if len(parts) == 3:
                a, b = (parts[0], int(parts[1])), (parts[0], int(parts[2]))
            elif len(parts) == 4:
                a, b = (parts[0], int(parts[1])), (parts[2], int(parts[3]))
            else:
                raise ValueError
        except ValueError:
            raise CnnkitError(
                f"{file}:{line_no}: expected 'name i j' or 'name1 i name2 j', got {line.strip()!r}"
            ) from None
        ids = []
        for name, number in (a, b):
            image = pair_image(root, name, number)
            ids.append(index.setdefault(str(image), len(index)))
        first.append(ids[0])
        second.append(ids[1])
        same.append(a[0] == b[0])  # 'name i name j' is one person too
    if not same:
        raise CnnkitError(f"{file} holds no pairs")
    missing = [p for p in index if not Path(p).is_file()]
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise CnnkitError(f"{file}: image not found: {missing[0]}{more}")
    fold, notes = None, []
    if per_fold is not None and folds > 1 and len(same) == folds * per_fold:
        fold = np.arange(len(same)) // per_fold
    elif per_fold is not None and len(same) != folds * per_fold:
        notes.append(
            f"{file}'s first line promises {folds} fold(s) of {per_fold} pairs, but it holds "
            f"{len(same)} pairs: they are dealt into stratified folds instead"
        )
    pairs = Pairs(np.array(first), np.array(second), np.array(same, dtype=bool), fold)
    return PairFile(list(index), pairs, notes)
