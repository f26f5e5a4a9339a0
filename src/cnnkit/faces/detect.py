"""Face detection with MTCNN (Zhang et al. 2016) as the facenet-pytorch package ships it: its
three networks' real weights are inside the wheel, so it runs offline. Each face comes back
with its box, score and 5 landmarks, and an aligned crop (faces.align).

facenet-pytorch's metadata pins torch < 2.3, so it is installed with --no-deps (plus
`requests`, which it imports); its MTCNN runs on our torch versions as it is.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data import decode_image
from cnnkit.errors import CnnkitError
from cnnkit.faces.align import align_face
from cnnkit.inputs import ImageInput, describe_input, expand_paths, output_folder

MIN_SCORE = 0.9  # MTCNN's last stage scores below this are not reported as faces
LANDMARKS = ("left_eye", "right_eye", "nose", "mouth_left", "mouth_right")


@dataclass
class Face:
    """One detected face: box (x1, y1, x2, y2) and landmarks (x, y) in the photo's pixels."""

    box: tuple[float, float, float, float]
    score: float
    landmarks: np.ndarray  # (5, 2): LANDMARKS in order
    crop: np.ndarray | None = field(default=None, repr=False)  # aligned RGB (size, size, 3)

    def to_dict(self) -> dict[str, Any]:
        return {
            "box": [round(float(v), 2) for v in self.box],
            "score": float(self.score),
            "landmarks": {
                name: [round(float(x), 2), round(float(y), 2)]
                for name, (x, y) in zip(LANDMARKS, self.landmarks, strict=True)
            },
        }


@dataclass
class FaceResult:
    """The faces of one image (an empty list: no face found), largest first."""

    source: str
    faces: list[Face]
    size: tuple[int, int]  # (H, W) of the photo
    file: str | None = None  # where the drawn photo went, if anywhere

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "source": self.source,
            "faces": [f.to_dict() for f in self.faces],
            "height": self.size[0],
            "width": self.size[1],
        }
        if not self.faces:
            out["note"] = "no face found"
        if self.file:
            out["file"] = self.file
        return out


class FaceDetector:
    """MTCNN on the CPU (or a given device); `detect` finds every face of one RGB image."""

    def __init__(self, device: str = "cpu", min_score: float = MIN_SCORE, min_face: int = 20):
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise CnnkitError(
                "face detection needs facenet-pytorch: pip install --no-deps "
                "facenet-pytorch==2.6.0 requests (`make setup` installs both)"
            ) from None
        if not 0.0 < min_score < 1.0:
            raise CnnkitError(f"the face score threshold must be in (0, 1), got {min_score}")
        self.min_score = float(min_score)
        self.mtcnn = MTCNN(keep_all=True, device=device, min_face_size=int(min_face))

    def detect(self, image: np.ndarray, align: int | None = 112) -> list[Face]:
        """The faces of an RGB uint8 (H, W, 3) image, largest first; with ``align`` each
        carries its aligned (align x align) crop."""
        from PIL import Image

        boxes, scores, points = self.mtcnn.detect(Image.fromarray(image), landmarks=True)
        if boxes is None:
            return []
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        scores = np.asarray(scores, dtype=np.float64).reshape(-1)
        points = np.asarray(points, dtype=np.float64).reshape(-1, 5, 2)
        faces = [
            Face(
                tuple(float(v) for v in b),
                float(s),
                p,
                align_face(image, p, align) if align else None,
            )
            for b, s, p in zip(boxes, scores, points, strict=True)
            if s >= self.min_score
        ]
        faces.sort(key=lambda f: -face_area(f))
        return faces


def face_area(face: Face) -> float:
    """The face's box area in pixels: how prominent it is in the photo."""
    x1, y1, x2, y2 = face.box
    return max(0.0, x2 - x1) * max(0.0, y2 - y1)


def main_face(faces: list[Face]) -> Face | None:
    """The face a photo filed under one person is taken to show: the largest box (None when
    there is no face)."""
    # The largest box, not score x area: every face kept already scored min_score (0.9) or
    # more, most of them above 0.99, so the score says "a face", not "the subject". The subject
    # is framed largest, while a sharp bystander can outscore a subject turned aside.
    # facenet-pytorch's own MTCNN picks the largest by default (select_largest=True).
    return max(faces, key=face_area, default=None)


def print_several_faces(sources: list[str]) -> None:
    """One line on stderr naming (up to three of) the photos that showed several faces, of
    which only the largest was used; nothing when there are none."""
    if not sources:
        return
    first = ", ".join(sources[:3])
    more = f", and {len(sources) - 3} more" if len(sources) > 3 else ""
    print(
        f"cnnkit: {len(sources)} photo(s) showed several faces; the largest face of each was "
        f"used: {first}{more}",
        file=sys.stderr,
    )


def detect_faces(
    images: list[ImageInput] | list[str],
    save_images: str | os.PathLike | None = None,
    save_crops: str | os.PathLike | None = None,
    detector: FaceDetector | None = None,
    align: int = 112,
) -> tuple[list[FaceResult], list[tuple[str, str]]]:
    """Detect the faces of files, folders, globs or in-memory images. Returns the results and
    the (path, reason) of inputs that could not be read. ``save_images``: each photo with its
    boxes and landmarks drawn; ``save_crops``: each aligned face as NAME_faceN.png."""
    detector = detector or FaceDetector()
    items: list[Any] = []
    for item in images:
        if isinstance(item, str | os.PathLike):
            items += [str(p) for p in expand_paths([str(item)])]
        else:
            items.append(item)
    if not items:
        raise CnnkitError("no image to look for faces in")
    out_images = _folder(save_images, "images")
    out_crops = _folder(save_crops, "face crops")
    results, errors = [], []
    for i, item in enumerate(items):
        name = describe_input(item)
        try:
            image = decode_image(item)
        except CnnkitError as exc:
            errors.append((name, str(exc)))
            continue
        faces = detector.detect(image, align=align)
        result = FaceResult(name, faces, (int(image.shape[0]), int(image.shape[1])))
        stem = f"{i:04d}-{Path(name).stem}" if Path(name).suffix else f"{i:04d}-image"
        if out_images is not None:
            result.file = str(draw_faces(image, faces, out_images / f"{stem}.png"))
        if out_crops is not None:
            from PIL import Image

            for j, face in enumerate(faces):
                Image.fromarray(face.crop).save(out_crops / f"{stem}_face{j}.png")
        results.append(result)
    return results, errors


def _folder(path: str | os.PathLike | None, what: str) -> Path | None:
    return None if path is None else output_folder(path, what)


def draw_faces(image: np.ndarray, faces: list[Face], path: Path) -> Path:
    """The photo with each face's box, score and landmarks drawn."""
    from PIL import Image, ImageDraw

    picture = Image.fromarray(image)
    draw = ImageDraw.Draw(picture)
    width = max(1, round(max(image.shape[:2]) / 250))
    for face in faces:
        x1, y1, x2, y2 = face.box
        draw.rectangle((x1, y1, x2, y2), outline=(0, 255, 0), width=width)
        draw.text((x1 + 2, max(0, y1 - 12)), f"{face.score:.2f}", fill=(0, 255, 0))
        for x, y in face.landmarks:
            r = width + 1
            draw.ellipse((x - r, y - r, x + r, y + r), fill=(255, 0, 0))
    picture.save(path)
    return path
