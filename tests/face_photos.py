"""Photos of two faces for the face tests, pasted from real LFW photos (imported by test
modules; pytest puts tests/ on the path): one face twice as large as the other."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "lfw-62"
BIG, SMALL = ("Bill_Clinton", 180), ("Tony_Blair", 90)  # LFW's crops are 90 x 90


def face_photo(path: Path, big_left: bool, faces: tuple[str, ...] = ("big", "small")) -> Path:
    """A grey 390 x 260 photo with the large face and the small one side by side (the large on
    the left if ``big_left``), or with only those of ``faces``, each at its same place."""
    places = {"big": 30 if big_left else 180, "small": 240 if big_left else 60}
    photo = Image.new("RGB", (390, 260), (128, 128, 128))
    for which in faces:
        name, side = BIG if which == "big" else SMALL
        face = Image.open(LFW / name / f"{name}_0001.jpg").convert("RGB").resize((side, side))
        photo.paste(face, (places[which], 40))
    path.parent.mkdir(parents=True, exist_ok=True)
    photo.save(path)
    return path
