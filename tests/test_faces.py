"""`cnnkit faces detect` on real photos: scikit-image's astronaut (one face) and coffee (none),
and the shared ORL faces; the 5-point alignment onto the template; bad input in one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data as skdata

from cnnkit.cli import main
from cnnkit.data import decode_image
from cnnkit.faces.align import TEMPLATE_112, align_face, similarity_matrix
from cnnkit.faces.detect import FaceDetector, detect_faces
from face_photos import LFW, face_photo

ORL = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "orl"


@pytest.fixture(scope="module")
def detector():
    return FaceDetector()


@pytest.fixture
def photos(tmp_path) -> dict[str, Path]:
    out = {}
    for name in ("astronaut", "coffee"):
        out[name] = tmp_path / f"{name}.png"
        Image.fromarray(getattr(skdata, name)()).save(out[name])
    return out


def test_one_face_with_landmarks_where_a_face_has_them(detector):
    faces = detector.detect(skdata.astronaut())
    assert len(faces) == 1
    face = faces[0]
    x1, y1, x2, y2 = face.box
    assert face.score > 0.99 and 60 < x2 - x1 < 130  # her face is about 90 px wide of 512
    eyes, nose, mouth = face.landmarks[:2], face.landmarks[2], face.landmarks[3:]
    assert ((face.landmarks >= [x1, y1]) & (face.landmarks <= [x2, y2])).all()
    assert eyes[0][0] < eyes[1][0] and mouth[0][0] < mouth[1][0]  # left before right
    assert eyes[:, 1].max() < nose[1] < mouth[:, 1].min()  # eyes, then nose, then mouth


def test_a_photo_without_a_face_is_reported_not_an_error(photos, capsys):
    assert main(["faces", "detect", str(photos["coffee"])]) == 0
    assert capsys.readouterr().out.strip() == f"{photos['coffee']}: no face found"
    assert main(["faces", "detect", str(photos["coffee"]), "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found[0]["faces"] == [] and found[0]["note"] == "no face found"


def test_alignment_puts_the_landmarks_on_the_template(detector):
    image = skdata.astronaut()
    face = detector.detect(image)[0]
    matrix = similarity_matrix(face.landmarks)
    moved = face.landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - TEMPLATE_112).mean() < 4.0  # her smile is wider than the template's
    crop = align_face(image, face.landmarks, 160)
    assert crop.shape == (160, 160, 3) and crop.dtype == np.uint8
    assert face.crop.shape == (112, 112, 3)
    # the aligned crop is a face again: detected, its eyes near the template's
    again = detector.detect(np.asarray(Image.fromarray(crop).resize((224, 224))))
    assert len(again) == 1
    eyes = again[0].landmarks[:2] / 224 * 112
    assert np.abs(eyes - TEMPLATE_112[:2]).max() < 8.0


def test_alignment_undoes_a_known_rotation_scale_and_shift_exactly():
    angle = np.deg2rad(25)
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    landmarks = TEMPLATE_112 @ (2.5 * rotate).T + [300.0, 140.0]
    matrix = similarity_matrix(landmarks)
    moved = landmarks @ matrix[:, :2].T + matrix[:, 2]
    assert np.abs(moved - TEMPLATE_112).max() < 1e-2


def test_every_orl_image_of_one_person_has_one_face(detector):
    if not (ORL / "s1").is_dir():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {ORL} is missing")
        pytest.skip("shared ORL faces not found")
    results, errors = detect_faces([str(ORL / "s1")], detector=detector)
    assert not errors and len(results) == 10
    assert all(len(r.faces) == 1 for r in results)


def test_align_keeps_the_largest_of_several_faces_and_names_those_photos(tmp_path, capsys):
    """Two photos of a large and a small face (the large one left, then right) give the large
    one's crop, as the photo of that face alone does; one line names both photos."""
    if not LFW.is_dir():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {LFW} is missing")
        pytest.skip("shared LFW faces not found")
    person = tmp_path / "people" / "p"
    for side, big_left in (("left", True), ("right", False)):
        face_photo(person / f"{side}_two.png", big_left)
        face_photo(person / f"{side}_big.png", big_left, ("big",))
        face_photo(person / f"{side}_small.png", big_left, ("small",))
    out = tmp_path / "aligned"
    assert main(["faces", "align", str(tmp_path / "people"), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert "6 faces of 1 people" in captured.out
    two = [str(person / "left_two.png"), str(person / "right_two.png")]
    assert captured.err.strip() == (
        "cnnkit: 2 photo(s) showed several faces; the largest face of each was used: "
        f"{two[0]}, {two[1]}"
    )
    for side in ("left", "right"):
        crop = {
            k: decode_image(out / "p" / f"{side}_{k}.png").astype(float)
            for k in ("two", "big", "small")
        }
        assert (
            np.abs(crop["two"] - crop["big"]).mean()
            < np.abs(crop["two"] - crop["small"]).mean() / 2
        )


def test_drawn_photos_and_crops_are_written(photos, tmp_path, capsys):
    drawn, crops = tmp_path / "drawn", tmp_path / "crops"
    argv = ["faces", "detect", str(photos["astronaut"]), str(photos["coffee"])]
    assert main([*argv, "--save-images", str(drawn), "--save-crops", str(crops)]) == 0
    assert "1 face" in capsys.readouterr().out
    assert sorted(p.name for p in drawn.iterdir()) == ["0000-astronaut.png", "0001-coffee.png"]
    assert [p.name for p in crops.iterdir()] == ["0000-astronaut_face0.png"]
    assert Image.open(crops / "0000-astronaut_face0.png").size == (112, 112)


def test_bad_input_is_one_line(photos, tmp_path, capsys):
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"not an image")
    assert main(["faces", "detect", str(bad), str(photos["astronaut"])]) == 0  # the rest runs
    captured = capsys.readouterr()
    assert captured.err.strip() == f"cnnkit: skipped {bad}: not an image"
    for argv, message in (
        (["faces", "detect", str(tmp_path / "missing.png")], "file not found"),
        (["faces", "detect", str(bad)], "none of the images could be read"),
        (["faces", "detect", str(photos["coffee"]), "--save-images", str(bad)], "is a file"),
        (["faces", "detect", str(photos["coffee"]), "--min-score", "2"], "must be in (0, 1)"),
        (["faces"], "required: detect"),
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and message in err, (argv, err)
