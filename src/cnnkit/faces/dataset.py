"""`cnnkit faces align`: a folder of people's photos -> a folder of aligned face crops, the
training data of an embedding model (what InsightFace's and facenet's align steps do)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.data import IMAGE_EXTENSIONS, decode_image
from cnnkit.errors import CnnkitError
from cnnkit.faces.detect import FaceDetector, main_face


@dataclass
class AlignedFolder:
    """Where the crops went, how many, the photos left out (path, reason) and those that
    showed several faces."""

    out: Path
    people: int
    faces: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    several: list[str] = field(default_factory=list)  # photos of several faces: largest kept


def align_folder(
    source: str | os.PathLike,
    out: str | os.PathLike,
    size: int = 112,
    detector: FaceDetector | None = None,
) -> AlignedFolder:
    """Each ``source/<person>/<photo>`` becomes ``out/<person>/<photo>.png``: the largest face,
    aligned on 5 landmarks to a ``size`` x ``size`` crop (photos of several faces are listed).
    Photos without a face, or unreadable, are skipped and listed. ``out`` records how it was
    made (cnnkit-faces.json), so a model trained on it aligns new photos the same way."""
    from PIL import Image

    from cnnkit.tasks.embed.task import ALIGNED_MARKER

    src, dst = Path(source), Path(out)
    if not src.is_dir():
        raise CnnkitError(f"folder not found: {src}")
    if dst.resolve() == src.resolve() or src.resolve() in dst.resolve().parents:
        raise CnnkitError("--out must be a folder outside the photos' folder")
    if dst.exists() and not dst.is_dir():
        raise CnnkitError(f"{dst} is a file, not a folder to write faces into")
    if not 32 <= size <= 512:
        raise CnnkitError(f"the crop size must be in 32..512, got {size}")
    earlier = _earlier_record(dst / ALIGNED_MARKER)
    if earlier is not None and (earlier.get("detector"), earlier.get("size")) != ("mtcnn", size):
        raise CnnkitError(
            f"{dst} already holds faces aligned at {earlier.get('size')} px: add more at that "
            "size (--size), or give another --out"
        )
    people = sorted(p for p in src.iterdir() if p.is_dir())
    if not people:
        raise CnnkitError(f"{src} has no person folders (one sub-folder of photos per person)")
    _refuse_namesakes(dst, src, earlier, [p.name for p in people])
    detector = detector or FaceDetector()
    result = AlignedFolder(dst, 0, 0)
    for person in people:
        photos = sorted(
            p for p in person.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS
        )
        written = 0
        for photo in photos:
            try:
                image = decode_image(photo)
            except CnnkitError as exc:
                result.skipped.append((str(photo), str(exc)))
                continue
            faces = detector.detect(image, align=size)
            face = main_face(faces)
            if face is None:
                result.skipped.append((str(photo), "no face found"))
                continue
            if len(faces) > 1:
                result.several.append(str(photo))
            target = dst / person.name / photo.relative_to(person).with_suffix(".png")
            target.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(face.crop).save(target)
            written += 1
        result.faces += written
        result.people += written > 0
    if not result.faces:
        raise CnnkitError(f"no face found in any photo of {src}")
    sources = [*_sources(earlier), str(src.resolve())]
    record = {
        "detector": "mtcnn",
        "size": size,
        "source": str(src.resolve()),
        "sources": sorted(set(sources)),  # every folder aligned into this one
    }
    (dst / ALIGNED_MARKER).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")
    return result


def _refuse_namesakes(dst: Path, src: Path, earlier: dict | None, names: list[str]) -> None:
    """Two people of different photo folders under one name would become one person: a
    folder aligned from another source that holds a person of this one's name is refused."""
    if earlier is None:
        return
    aligned_from = _sources(earlier)
    if str(src.resolve()) in aligned_from:
        return  # the same photos again: their crops are made anew
    taken = [name for name in names if (dst / name).is_dir()]
    if taken:
        raise CnnkitError(
            f"{dst} already holds a person '{taken[0]}' aligned from another photo folder: "
            f"the person of {src} with that folder name would be merged into them (folder "
            "names must not repeat): rename one, or give another --out"
        )


def _sources(record: dict | None) -> list[str]:
    """The photo folders an aligned folder's record names (older records: one, 'source')."""
    if not record:
        return []
    listed = record.get("sources") or [record.get("source")]
    return [str(s) for s in listed if s]


def _earlier_record(marker: Path) -> dict | None:
    """What an earlier `faces align` into the same folder recorded, if one did."""
    if not marker.is_file():
        return None
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # unreadable: this run's record replaces it
    return record if isinstance(record, dict) else None
