"""LFW's pairs format read against a folder of people: its headers and folds, a BOM, other
image suffixes, and its two layouts (tab-separated, whose names may hold spaces, and fields
separated by any whitespace) on people folders the test makes from real LFW photos."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.tasks.embed.pairs import read_pairs

LFW = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces" / "lfw-62"


@pytest.fixture
def people(tmp_path) -> Path:
    """ROOT/<name>/<name>_000k.jpg, 3 real photos each, for names with and without spaces."""
    if not (LFW / "Tony_Blair").is_dir():
        if os.environ.get("CNNKIT_REQUIRE_SHARED_DATA") == "1":
            pytest.fail(f"CNNKIT_REQUIRE_SHARED_DATA=1 but {LFW} is missing")
        pytest.skip("shared LFW faces not found")
    root = tmp_path / "people"
    for name, source in (
        ("Jean Paul", "Tony_Blair"),
        ("Ann Lee", "Bill_Clinton"),
        ("Jean_Paul", "Tony_Blair"),
        ("Ann_Lee", "Bill_Clinton"),
    ):
        (root / name).mkdir(parents=True)
        for k in (1, 2, 3):
            shutil.copy(LFW / source / f"{source}_{k:04d}.jpg", root / name / f"{name}_{k:04d}.jpg")
    return root


def named_pairs(pairs_file: Path, root: Path) -> list[tuple[str, str, bool]]:
    """Each pair of the file as (first image, second image, same person)."""
    found = read_pairs(pairs_file, root)
    pairs = zip(found.pairs.first, found.pairs.second, found.pairs.same, strict=True)
    return [(found.paths[a], found.paths[b], bool(same)) for a, b, same in pairs]


def test_pairs_split_on_tabs_when_they_give_a_pair_else_on_any_whitespace(people, tmp_path):
    def expected(a: str, b: str) -> list[tuple[str, str, bool]]:
        image = {k: str(people / a / f"{a}_{k:04d}.jpg") for k in (1, 2, 3)}
        other = {k: str(people / b / f"{b}_{k:04d}.jpg") for k in (1, 2)}
        return [(image[1], image[3], True), (image[2], other[1], False), (other[1], other[2], True)]

    # LFW's layout: tabs only, so names keep their spaces (a stray space at an end is none)
    tabs = "Jean Paul\t1\t3\nJean Paul\t2\tAnn Lee\t1\nAnn Lee\t1\t2 \n"
    (tmp_path / "tabs.txt").write_text(tabs, encoding="utf-8")
    assert named_pairs(tmp_path / "tabs.txt", people) == expected("Jean Paul", "Ann Lee")
    # no tab in a line: any run of whitespace separates, as before
    spaces = "Jean_Paul 1 3\nJean_Paul  2   Ann_Lee 1\nAnn_Lee 1 2\n"
    (tmp_path / "spaces.txt").write_text(spaces, encoding="utf-8")
    assert named_pairs(tmp_path / "spaces.txt", people) == expected("Jean_Paul", "Ann_Lee")
    # a stray tab in a space-separated line: its tabs do not give a pair, so whitespace does
    mixed = "Jean_Paul 1 3\t\nJean_Paul\t2 Ann_Lee 1\nAnn_Lee 1 2\n"
    (tmp_path / "mixed.txt").write_text(mixed, encoding="utf-8")
    assert named_pairs(tmp_path / "mixed.txt", people) == expected("Jean_Paul", "Ann_Lee")
    # a space-separated line cannot name a person with a space: one line says what was expected
    (tmp_path / "bad.txt").write_text("Jean Paul 1 3\n", encoding="utf-8")
    with pytest.raises(CnnkitError, match=r"bad.txt:1: expected 'name i j'"):
        read_pairs(tmp_path / "bad.txt", people)


def test_lfw_pairs_files_are_read_with_their_folds(tmp_path):
    names = sorted(p.name for p in LFW.iterdir())[:4]
    lines = ["2\t2"]
    for fold in range(2):
        lines += [f"{names[fold]}\t1\t2", f"{names[fold + 2]}\t3\t4"]
        lines += [f"{names[0]}\t1\t{names[1]}\t{fold + 1}", f"{names[2]}\t2\t{names[3]}\t5"]
    (tmp_path / "pairs.txt").write_text("\n".join(lines) + "\n")
    found = read_pairs(tmp_path / "pairs.txt", LFW)
    assert found.pairs.same.tolist() == [True, True, False, False] * 2
    assert found.pairs.fold.tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    first = found.paths[found.pairs.first[0]]
    assert first == str(LFW / names[0] / f"{names[0]}_0001.jpg")
    assert len(found.paths) == len(set(found.paths))  # each image embedded once
    # pairsDevTest.txt's header is one number (n same, then n different pairs): no folds
    dev = ["2", f"{names[0]}\t1\t2", f"{names[2]}\t3\t4", f"{names[0]}\t1\t{names[1]}\t1"]
    (tmp_path / "pairsDevTest.txt").write_text("\n".join([*dev, f"{names[2]}\t2\t{names[3]}\t5"]))
    dev_pairs = read_pairs(tmp_path / "pairsDevTest.txt", LFW).pairs
    assert dev_pairs.same.tolist() == [True, True, False, False] and dev_pairs.fold is None

    (tmp_path / "bad.txt").write_text(f"{names[0]}\t1\t2\n{names[0]}\tone\t2\n")
    with pytest.raises(CnnkitError, match=r"bad.txt:2: expected"):
        read_pairs(tmp_path / "bad.txt", LFW)
    (tmp_path / "missing.txt").write_text(f"{names[0]}\t1\t999\n")
    with pytest.raises(CnnkitError, match="image not found"):
        read_pairs(tmp_path / "missing.txt", LFW)
    # a BOM (Notepad's) and CRLF lines read as plain text; another image format is found
    (tmp_path / "bom.txt").write_bytes("\ufeff".join(["", "\r\n".join(dev)]).encode("utf-8"))
    assert read_pairs(tmp_path / "bom.txt", LFW).pairs.same.tolist() == [True, True, False]
    pngs = tmp_path / "pngs"
    for name, number in ((names[0], 1), (names[0], 2)):
        (pngs / name).mkdir(parents=True, exist_ok=True)
        stem = f"{name}_{number:04d}"
        Image.open(LFW / name / f"{stem}.jpg").save(pngs / name / f"{stem}.png")
    (tmp_path / "png.txt").write_text(f"{names[0]}\t1\t2\n")
    assert read_pairs(tmp_path / "png.txt", pngs).paths == [
        str(pngs / names[0] / f"{names[0]}_000{k}.png") for k in (1, 2)
    ]
