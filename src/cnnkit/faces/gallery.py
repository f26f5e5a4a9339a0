"""A face gallery: each enrolled person's mean embedding, saved as an .npz with the model it
came from, and identification against it (the nearest person, or `unknown`).

Embeddings of one model mean nothing to another, so a gallery records the sha256 of the
checkpoint that made it and is refused by any other model.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data import IMAGE_EXTENSIONS
from cnnkit.errors import CnnkitError
from cnnkit.inputs import ImageInput

UNKNOWN = "unknown"


@dataclass
class Gallery:
    """People (names), their mean unit embeddings (P, D), images enrolled per person, and the
    model's fingerprint."""

    names: list[str]
    embeddings: np.ndarray
    counts: list[int]
    model_sha256: str
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (image, reason)
    several: list[str] = field(default_factory=list)  # photos of several faces: largest used

    def save(self, path: str | os.PathLike) -> Path:
        path = Path(path)
        if path.suffix != ".npz":
            raise CnnkitError(f"a gallery is an .npz file, not {path.name}")
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            names=np.array(self.names, dtype=str),
            embeddings=self.embeddings.astype(np.float32),
            counts=np.array(self.counts, dtype=np.int64),
            model_sha256=np.array(self.model_sha256),
            format=np.array("cnnkit-face-gallery-1"),
        )
        return path

    @classmethod
    def load(cls, path: str | os.PathLike) -> Gallery:
        path = Path(path)
        if not path.is_file():
            raise CnnkitError(f"gallery not found: {path}")
        try:
            with np.load(path, allow_pickle=False) as f:
                if str(f["format"]) != "cnnkit-face-gallery-1":
                    raise KeyError("format")
                return cls(
                    [str(n) for n in f["names"]],
                    np.asarray(f["embeddings"], dtype=np.float32),
                    [int(c) for c in f["counts"]],
                    str(f["model_sha256"]),
                )
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as exc:
            raise CnnkitError(
                f"{path} is not a cnnkit face gallery ({exc or 'empty file'}); make one with"
                " `cnnkit faces enroll`"
            ) from None


@dataclass
class Identification:
    """Who one photo shows: the nearest enrolled person above the threshold, else unknown."""

    source: str
    name: str | None  # None: no face found
    score: float | None  # cosine similarity to the nearest person
    nearest: str | None
    note: str | None = None
    several_faces: bool = False  # the photo showed several: the largest was identified

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"source": self.source, "name": self.name}
        if self.score is not None:
            out.update(score=round(self.score, 6), nearest=self.nearest)
        if self.note:
            out["note"] = self.note
        out["several_faces"] = self.several_faces
        return out


def enroll(embedder: Any, folder: str | os.PathLike) -> Gallery:
    """Every sub-folder of ``folder`` is one person; their photos' embeddings are averaged
    (photos without a face or unreadable are skipped and listed)."""
    root = Path(folder)
    if not root.is_dir():
        raise CnnkitError(f"gallery folder not found: {root}")
    people = sorted(p for p in root.iterdir() if p.is_dir())
    if not people:
        raise CnnkitError(f"{root} has no person folders (one sub-folder of photos per person)")
    names, means, counts, skipped, several = [], [], [], [], []
    for person in people:
        photos = sorted(
            p for p in person.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        result = embedder.embed([str(p) for p in photos])
        skipped += result.failed
        several += result.several
        if not len(result.embeddings):
            skipped.append((str(person), "no usable photo: person not enrolled"))
            continue
        mean = result.embeddings.mean(0)
        names.append(person.name)
        means.append(mean / max(float(np.linalg.norm(mean)), 1e-12))
        counts.append(len(result.embeddings))
    if not names:
        raise CnnkitError(f"no person in {root} could be enrolled: {skipped[0][1]}")
    return Gallery(names, np.stack(means), counts, embedder.fingerprint, skipped, several)


def identify(
    embedder: Any,
    gallery: Gallery,
    items: list[ImageInput],
    threshold: float | None = None,
) -> tuple[list[Identification], list[tuple[str, str]]]:
    """Each photo's nearest enrolled person, or `unknown` below the threshold (the model's
    verification threshold unless given); unreadable inputs come back as (input, reason)."""
    if gallery.model_sha256 != embedder.fingerprint:
        raise CnnkitError(
            "this gallery was enrolled with another model: enroll again with this one "
            "(`cnnkit faces enroll`)"
        )
    limit = embedder.resolve_threshold(threshold)
    result = embedder.embed(items)
    out: list[Identification] = []
    scores = result.embeddings @ gallery.embeddings.T if len(result.embeddings) else None
    several = set(result.several_at)
    for k, source in enumerate(result.sources):
        best = int(np.argmax(scores[k]))
        score = float(scores[k, best])
        name = gallery.names[best] if score > limit else UNKNOWN
        nearest = gallery.names[best]
        out.append(Identification(source, name, score, nearest, None, k in several))
    errors = []
    for source, reason in result.failed:
        if reason == "no face found":
            out.append(Identification(source, None, None, None, reason))
        else:
            errors.append((source, reason))
    return out, errors
