"""Detection readers (COCO, YOLO, VOC, masks), their splits and problems, and inspection."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.dataset import DetectionSet
from cnnkit.tasks.detect.formats import detect_format, read_detection, read_instance_mask
from cnnkit.tasks.detect.inspect import inspect_detection
from detect_files import (
    CLASSES,
    SAMPLES,
    corrupt_png,
    photo,
    shared_dataset,
    write_coco,
    write_masks,
    write_voc,
    write_yolo,
    yolo_line,
)

# ---------------------------------------------------------------- helpers


def by_stem(data: DetectionSet) -> dict[str, tuple]:
    """stem -> (boxes, labels, iscrowd, original size, stored size) of every image."""
    out = {}
    for i, path in enumerate(data.paths):
        t = data.targets[i]
        out[Path(path).stem] = (
            t.boxes,
            t.labels.tolist(),
            t.iscrowd.tolist(),
            data.original_sizes[i],
            tuple(data.images[i].shape[1:]),
        )
    return out


def expected_boxes(objects) -> torch.Tensor:
    return torch.tensor([box for _, box in objects], dtype=torch.float32).reshape(-1, 4)


def read_all(path) -> DetectionSet:
    splits = read_detection(path, val_split=0)
    assert splits.val is None and splits.val_source == "none"
    return splits.train


# ---------------------------------------------------------------- one box, four formats


def test_the_same_boxes_in_every_format_give_identical_targets(tmp_path):
    write_coco(tmp_path / "coco", SAMPLES)
    write_yolo(tmp_path / "yolo", SAMPLES)
    write_voc(tmp_path / "voc", SAMPLES)
    write_masks(tmp_path / "masks", SAMPLES)
    read = {fmt: read_detection(tmp_path / fmt, val_split=0) for fmt in ("coco", "yolo", "voc")}
    masks = read_detection(tmp_path / "masks", val_split=0)
    for fmt, splits in [*read.items(), ("masks", masks)]:
        assert splits.format == fmt
        assert splits.skipped == [] and splits.clipped_boxes == 0 and splits.dropped_boxes == 0
        assert detect_format(tmp_path / fmt) == fmt
    for fmt, splits in read.items():
        assert splits.classes == CLASSES, fmt
        got = by_stem(splits.train)
        assert sorted(got) == [s for s, _, _ in SAMPLES]
        for stem, (h, w), objects in SAMPLES:
            boxes, labels, crowd, original, stored = got[stem]
            # YOLO stores 6-decimal fractions; the others store the integers themselves.
            tol = 1e-3 if fmt == "yolo" else 0.0
            torch.testing.assert_close(boxes, expected_boxes(objects), atol=tol, rtol=0)
            assert labels == [c for c, _ in objects], (fmt, stem)
            assert crowd == [False] * len(objects)
            assert original == stored == (h, w)
    assert masks.classes == ["object"]
    for stem, (boxes, labels, _, _, _) in by_stem(masks.train).items():
        objects = next(o for s, _, o in SAMPLES if s == stem)
        assert torch.equal(boxes, expected_boxes(objects)) and labels == [0] * len(objects)


def test_images_decode_once_to_the_files_pixels(tmp_path):
    write_coco(tmp_path, SAMPLES[:1])
    data = read_all(tmp_path)
    on_disk = np.asarray(Image.open(tmp_path / "images" / "train" / "a.png"))
    assert data.images[0].dtype == torch.uint8
    assert np.array_equal(data.images[0].permute(1, 2, 0).numpy(), on_disk)


# ---------------------------------------------------------------- COCO


def test_coco_splits_noncontiguous_ids_crowd_and_background(tmp_path):
    # category ids 9 ("zebra") and 4 ("ant"): classes follow the sorted ids, not the names
    write_coco(tmp_path, SAMPLES[:2], ["ant", "zebra"], "train2017", category_ids=[4, 9])
    val = write_coco(tmp_path, SAMPLES[2:], ["ant", "zebra"], "val2017", category_ids=[4, 9])
    data = json.loads(val.read_text())
    data["annotations"][0]["iscrowd"] = 1
    val.write_text(json.dumps(data))
    splits = read_detection(tmp_path)
    assert splits.format == "coco" and splits.classes == ["ant", "zebra"]
    assert splits.val_source == "folder" and splits.test is None
    assert sorted(by_stem(splits.train)) == ["a", "b"] and sorted(by_stem(splits.val)) == ["c", "d"]
    val_targets = by_stem(splits.val)
    assert val_targets["c"][1] == []  # listed without annotations: a background image
    assert val_targets["d"][1] == [0, 0, 1] and val_targets["d"][2] == [True, False, False]


def test_a_single_coco_json_path_is_the_whole_dataset(tmp_path):
    path = write_coco(tmp_path, SAMPLES, split="val2017")
    assert detect_format(path) == "coco"
    splits = read_detection(path, val_split=0.25, seed=0)
    assert splits.val_source == "split" and len(splits.train) == 3 and len(splits.val) == 1


def test_coco_problems_skip_the_image_and_say_why(tmp_path):
    path = write_coco(tmp_path, SAMPLES)
    data = json.loads(path.read_text())
    data["annotations"][0]["category_id"] = 99  # image a: unknown category
    data["annotations"][2]["bbox"] = [1, 2, 3]  # image b: malformed box
    data["images"][2]["file_name"] = "missing.png"  # image c: no such file
    path.write_text(json.dumps(data))
    splits = read_detection(tmp_path, val_split=0)
    reasons = dict(splits.skipped)
    assert len(splits.skipped) == 3
    assert "unknown category_id 99" in reasons[f"{path} (annotation 1)"]
    assert "bbox must be 4 numbers" in reasons[f"{path} (annotation 3)"]
    assert reasons["missing.png"].startswith("image not found")
    assert [Path(p).stem for p in splits.train.paths] == ["d"]
    assert splits.train.box_count() == 3


def test_coco_segmentation_without_bbox_and_windows_file_names(tmp_path):
    """Label tools that export only polygons or RLE, and file names written on Windows."""
    from pycocotools import mask as coco_mask

    path = write_coco(tmp_path, SAMPLES)  # d is 32 x 28 (H x W)
    expected = by_stem(read_all_unskipped(path))
    (tmp_path / "images" / "train" / "sub").mkdir()
    (tmp_path / "images" / "train" / "d.png").rename(
        tmp_path / "images" / "train" / "sub" / "d.png"
    )
    data = json.loads(path.read_text())
    data["images"][3]["file_name"] = "sub\\d.png"
    first, second, third = (a for a in data["annotations"] if a["image_id"] == 4)
    x, y, w, h = first.pop("bbox")  # a polygon tracing the box
    first["segmentation"] = [[x, y, x + w, y, x + w, y + h, x, y + h]]
    x, y, w, h = second.pop("bbox")  # an RLE of the box's pixels
    grid = np.zeros((32, 28), dtype=np.uint8, order="F")
    grid[y : y + h, x : x + w] = 1
    rle = coco_mask.encode(grid)
    rle["counts"] = rle["counts"].decode()  # compressed RLE as COCO JSON stores it
    second["segmentation"] = rle
    third.pop("bbox")
    for malformed in ([[1.0, 2.0, 3.0]], [[1.0, 2.0, 3.0], [4, 5, 6, 7, 8]], [[1, 1, 9, 9]]):
        third["segmentation"] = malformed  # odd coordinates, or fewer than 3 points
        path.write_text(json.dumps(data))
        splits = read_detection(tmp_path, val_split=0)
        assert [reason for _, reason in splits.skipped] == [
            "bbox must be 4 numbers [x, y, w, h] (or, without one, a polygon or RLE "
            "segmentation); image sub\\d.png skipped"
        ]
    third["segmentation"] = [[1.0, 2.0, 3.0, 2.0, 3.0, 9.0]]
    path.write_text(json.dumps(data))
    splits = read_detection(tmp_path, val_split=0)
    assert splits.skipped == []
    got = by_stem(splits.train)
    assert got["d"][1] == expected["d"][1]
    torch.testing.assert_close(got["d"][0][:2], expected["d"][0][:2])
    assert got["d"][0][2].tolist() == [1.0, 2.0, 3.0, 9.0]


def read_all_unskipped(path: Path) -> DetectionSet:
    splits = read_detection(path, val_split=0)
    assert splits.skipped == []
    return splits.train


def test_coco_clipping_and_dropping_boxes(tmp_path):
    path = write_coco(tmp_path, SAMPLES[3:])  # d: 32 x 28 (H x W)
    data = json.loads(path.read_text())
    data["annotations"][1]["bbox"] = [20, -3, 20, 10]  # reaches outside: (20, 0, 28, 7)
    data["annotations"][2]["bbox"] = [40, 1, 5, 5]  # entirely outside: no area left
    data["annotations"].append(dict(data["annotations"][0], id=9, bbox=[3, 3, 0, 5]))  # zero w
    path.write_text(json.dumps(data))
    splits = read_detection(tmp_path, val_split=0)
    assert splits.skipped == []
    assert splits.clipped_boxes == 1 and splits.dropped_boxes == 2
    assert splits.train.targets[0].boxes.tolist() == [[5, 6, 9, 30], [20, 0, 28, 7]]
    assert splits.train.targets[0].labels.tolist() == [0, 0]


# ---------------------------------------------------------------- YOLO


def test_yolo_dict_names_val_folder_list_files_and_polygons(tmp_path):
    write_yolo(tmp_path, SAMPLES[:2], split="train")
    write_yolo(tmp_path, SAMPLES[2:], split="val")
    (tmp_path / "test.txt").write_text("./images/train/a.png\nimages/val/d.png\n")
    # a polygon line (segment labels) gives its enclosing box
    (tmp_path / "labels" / "train" / "b.txt").write_text(
        "3 0.0 0.0 0.194444 0.0 0.1 0.375\n"  # b is 24 x 36: (0, 0, 7, 9)
    )
    (tmp_path / "data.yaml").write_text(
        yaml.safe_dump(
            {
                "path": str(tmp_path),
                "train": "images/train",
                "val": ["images/val"],
                "test": "test.txt",
                "names": {0: "cat", 1: "dog", 3: "emu"},
            }
        )
    )
    splits = read_detection(tmp_path / "data.yaml")
    assert splits.format == "yolo" and splits.classes == ["cat", "dog", "emu"]
    assert splits.val_source == "folder" and splits.skipped == [] and splits.notes == []
    assert [Path(p).stem for p in splits.test.paths] == ["a", "d"]
    b = by_stem(splits.train)["b"]
    torch.testing.assert_close(b[0], torch.tensor([[0.0, 0.0, 7.0, 9.0]]), atol=1e-3, rtol=0)
    assert b[1] == [2]  # label id 3 is the third name
    assert by_stem(splits.val)["c"][1] == []  # no label file: background image


def test_yolo_val_that_repeats_train_becomes_a_seeded_split(tmp_path):
    write_yolo(tmp_path, SAMPLES)
    data = yaml.safe_load((tmp_path / "data.yaml").read_text())
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({**data, "val": data["train"]}))
    splits = read_detection(tmp_path, val_split=0.25, seed=3)
    assert splits.val_source == "split"
    assert len(splits.train) == 3 and len(splits.val) == 1
    assert not set(splits.train.paths) & set(splits.val.paths)
    assert len(splits.notes) == 1 and "same 4 images as train" in splits.notes[0]


def test_yolo_bad_label_files_are_reported_and_skipped(tmp_path):
    write_yolo(tmp_path, SAMPLES)
    labels = tmp_path / "labels" / "train"
    (labels / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n1 0.5 oops 0.2 0.2\n")  # malformed line 2
    (labels / "b.txt").write_text("7 0.5 0.5 0.2 0.2\n")  # unknown class id
    # d (32 x 28): one box reaching outside (clipped), one with zero width (dropped)
    (labels / "d.txt").write_text("0 0.9 0.5 0.4 0.25\n1 0.5 0.5 0 0.2\n")
    (labels / "ghost.txt").write_text(yolo_line(0, (1, 1, 5, 5), (20, 20)) + "\n")  # no image
    corrupt_png(tmp_path / "images" / "train" / "e.png")
    splits = read_detection(tmp_path, val_split=0)
    reasons = dict(splits.skipped)
    assert len(reasons) == 4
    assert reasons[f"{labels / 'a.txt'}:2"].startswith("fields must be numbers")
    assert reasons[f"{labels / 'b.txt'}:1"].startswith("unknown class id 7")
    assert reasons[str(labels / "ghost.txt")].startswith("no image for this label file")
    assert reasons[str(tmp_path / "images" / "train" / "e.png")] == "truncated PNG"
    assert [Path(p).stem for p in splits.train.paths] == ["c", "d"]
    assert splits.clipped_boxes == 1 and splits.dropped_boxes == 1
    d = by_stem(splits.train)["d"]
    torch.testing.assert_close(d[0], torch.tensor([[19.6, 12.0, 28.0, 20.0]]), atol=1e-3, rtol=0)


def test_yolo_missing_image_in_a_list_file(tmp_path):
    write_yolo(tmp_path, SAMPLES[:2])
    (tmp_path / "train.txt").write_text("images/train/a.png\nimages/train/nope.png\n")
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({"train": "train.txt", "names": CLASSES}))
    splits = read_detection(tmp_path, val_split=0)
    assert splits.skipped == [
        (f"{tmp_path / 'train.txt'}:2", "image not found: images/train/nope.png")
    ]
    assert [Path(p).stem for p in splits.train.paths] == ["a"]


@pytest.mark.parametrize("path_key", [".", None])
@pytest.mark.parametrize("given", ["folder", "dot", "yaml"])
def test_yolo_read_from_inside_its_folder_keeps_every_box(tmp_path, monkeypatch, path_key, given):
    """As Ultralytics is run: from the dataset's folder, `path: .` or no path at all."""
    root = tmp_path / "set"
    write_yolo(root, SAMPLES)
    fields = {"train": "images/train", "names": CLASSES}
    (root / "data.yaml").write_text(
        yaml.safe_dump({**fields, "path": path_key} if path_key else fields)
    )
    expected = read_all(root).box_count()
    assert expected > 0
    monkeypatch.chdir(tmp_path if given == "folder" else root)
    where = {"folder": "set", "dot": ".", "yaml": "data.yaml"}[given]
    assert read_all(Path(where)).box_count() == expected


def test_yolo_roboflow_export_with_dotdot_split_paths(tmp_path):
    """Roboflow's data.yaml sits beside train/ and valid/ yet says ../train/images."""
    write_yolo(tmp_path / "train", SAMPLES[:3], split="")
    write_yolo(tmp_path / "valid", SAMPLES[3:], split="")
    for part in ("train", "valid"):
        (tmp_path / part / "data.yaml").unlink()
    fields = {"train": "../train/images", "val": "../valid/images", "names": CLASSES}
    (tmp_path / "data.yaml").write_text(yaml.safe_dump({**fields, "nc": len(CLASSES)}))
    splits = read_detection(tmp_path)
    assert splits.val_source == "folder" and splits.skipped == []
    assert sorted(by_stem(splits.train)) == ["a", "b", "c"] and sorted(by_stem(splits.val)) == ["d"]
    assert splits.train.box_count() + splits.val.box_count() == sum(len(o) for _, _, o in SAMPLES)


# ---------------------------------------------------------------- VOC


def test_voc_splits_difficult_and_one_based_corners(tmp_path):
    write_voc(tmp_path, SAMPLES)
    xml = tmp_path / "Annotations" / "a.xml"
    xml.write_text(
        xml.read_text().replace("<difficult>0</difficult>", "<difficult>1</difficult>", 1)
    )
    main = tmp_path / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("a\nb\n")
    (main / "val.txt").write_text("c\n")
    (main / "test.txt").write_text("d\n")
    splits = read_detection(tmp_path)
    assert splits.format == "voc" and splits.classes == CLASSES and splits.val_source == "folder"
    a = by_stem(splits.train)["a"]
    assert a[0].tolist() == [[2, 3, 12, 10], [20, 5, 40, 30]]  # xmin 3 (1-based) -> x1 2
    assert a[2] == [True, False]  # difficult -> crowd, ignored by mAP
    assert [Path(p).stem for p in splits.test.paths] == ["d"]


def test_voc_bad_files(tmp_path):
    write_voc(tmp_path, SAMPLES)
    (tmp_path / "Annotations" / "a.xml").write_text("<annotation><object>")  # malformed
    (tmp_path / "JPEGImages" / "b.png").unlink()  # missing image
    bad_box = tmp_path / "Annotations" / "d.xml"
    bad_box.write_text(bad_box.read_text().replace("<xmin>6</xmin>", "<xmin>six</xmin>"))
    splits = read_detection(tmp_path, val_split=0)
    reasons = dict(splits.skipped)
    assert len(reasons) == 3
    assert reasons[str(tmp_path / "Annotations" / "a.xml")].startswith("malformed XML")
    assert reasons[str(tmp_path / "Annotations" / "b.xml")] == "image not found: JPEGImages/b.png"
    assert reasons[str(bad_box)].startswith("object 1: could not convert")
    assert [Path(p).stem for p in splits.train.paths] == ["c"]
    assert splits.classes == []  # no usable file named an object


# ---------------------------------------------------------------- masks


def test_masks_layouts_class_names_and_unpaired_files(tmp_path):
    write_masks(tmp_path / "ped", SAMPLES, images="PNGImages", masks="PedMasks")
    assert read_detection(tmp_path / "ped", val_split=0).classes == ["person"]
    root = write_masks(tmp_path / "named", SAMPLES)
    (root / "classes.txt").write_text("car\n")
    photo(root / "images" / "lonely.png", (10, 10))  # image without a mask
    Image.fromarray(np.ones((10, 10), np.uint8)).save(root / "masks" / "orphan_mask.png")
    first = sorted((root / "images").iterdir())[0]
    twin = first.with_suffix(".jpg")  # the same name: the first in name order gets the mask
    width, height = Image.open(first).size
    photo(twin, (height, width))
    splits = read_detection(root, val_split=0)
    assert splits.format == "masks" and splits.classes == ["car"]
    assert dict(splits.skipped) == {
        str(root / "images" / "lonely.png"): "no mask for this image in masks/",
        str(root / "masks" / "orphan_mask.png"): "image not found for this mask in images/",
        str(first): f"{twin.name} has the same name and took its mask",
    }
    assert len(splits.train) == 4 and splits.train.box_count() == 6


@pytest.mark.parametrize("nesting", ["PNGImages/test", "test/PNGImages"])
def test_mask_pairs_split_in_subfolders_read_as_that_split_for_both_tasks(tmp_path, nesting):
    """A held-out part kept as PNGImages/test/ + PedMasks/test/, or test/PNGImages/ +
    test/PedMasks/: the same boxes as the flat layout, as the test split, for detection and
    segmentation (and `datasets --inspect` does not take it for class folders)."""
    from cnnkit.cli import main
    from cnnkit.tasks.segment.formats import read_segmentation

    root = tmp_path / "nested"
    images, masks = (
        ("PNGImages/test", "PedMasks/test")
        if nesting.startswith("PNG")
        else ("test/PNGImages", "test/PedMasks")
    )
    write_masks(root, SAMPLES, images, masks)
    nested = read_detection(root)
    assert nested.train is None and nested.val is None and nested.classes == ["person"]
    found = by_stem(nested.test)
    assert sorted(found) == sorted(stem for stem, _, _ in SAMPLES)
    for stem, _, objects in SAMPLES:  # the flat layout's boxes (test above), one class
        assert torch.equal(found[stem][0], expected_boxes(objects)), stem
    segments = read_segmentation(root)
    assert segments.train is None and len(segments.test) == len(SAMPLES)
    assert main(["datasets", "--inspect", str(root)]) == 0


def test_inspect_without_task_names_a_detection_layouts_missing_part(tmp_path, capsys):
    from cnnkit.cli import main

    write_yolo(tmp_path, SAMPLES)
    (tmp_path / "data.yaml").unlink()  # images/ + labels/ without data.yaml: a YOLO mistake
    assert main(["datasets", "--inspect", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no detection dataset layout" in err and "YOLO (data.yaml)" in err
    # --instances is about segmentation masks: it implies --task segment, and needs it
    write_masks(tmp_path / "m", SAMPLES)
    assert main(["datasets", "--inspect", str(tmp_path / "m"), "--instances", "foreground"]) == 0
    assert "pixel share per class" in capsys.readouterr().out
    args = ["datasets", "--inspect", str(tmp_path / "m"), "--instances", "auto", "--task", "detect"]
    assert main(args) == 2
    assert "--instances reads segmentation masks" in capsys.readouterr().err


def test_a_second_folder_for_one_split_is_named_in_a_note_for_both_tasks(tmp_path):
    """PedMasks/train/ and PedMasks/trainval/ both mean the training split: the first is read
    and the other is named, never dropped without a word."""
    from cnnkit.tasks.segment.formats import read_segmentation

    root = tmp_path / "twice"
    write_masks(root, SAMPLES[:2], "PNGImages/train", "PedMasks/train")
    write_masks(root, SAMPLES[2:], "PNGImages/trainval", "PedMasks/trainval")
    note = (
        f"PNGImages/trainval/ + PedMasks/trainval/ left out ({len(SAMPLES) - 2} masks): "
        "PNGImages/train/ + PedMasks/train/ is the train split already"
    )
    detection = read_detection(root, val_split=0)
    assert len(detection.train) == 2 and any(note in n for n in detection.notes)
    segments = read_segmentation(root, val_split=0)
    assert len(segments.train) == 2 and any(note in n for n in segments.notes)


def test_rgb_instance_masks_and_size_mismatch(tmp_path):
    photo(tmp_path / "images" / "x.png", (12, 16))
    rgb = np.zeros((12, 16, 3), np.uint8)
    rgb[1:4, 2:6] = (255, 0, 0)
    rgb[5:12, 10:16] = (0, 0, 255)
    (tmp_path / "masks").mkdir()
    Image.fromarray(rgb).save(tmp_path / "masks" / "x.png")
    photo(tmp_path / "images" / "y.png", (12, 16))
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "masks" / "y_mask.png")
    splits = read_detection(tmp_path, val_split=0)
    assert splits.train.targets[0].boxes.tolist() == [[10, 5, 16, 12], [2, 1, 6, 4]]
    assert read_instance_mask(tmp_path / "masks" / "x.png").max() == 2
    assert dict(splits.skipped)[str(tmp_path / "images" / "y.png")].endswith(
        "gives 8x8 but the image is 16x12"
    )


@pytest.mark.parametrize("mode", ["LA", "I;16", "1", "F"])
def test_instance_masks_with_alpha_or_other_modes_give_the_same_boxes_and_classes(tmp_path, mode):
    """An image editor may save ids with an alpha channel (LA): the ids are channel 0, for the
    boxes and for segmentation's person masks alike."""
    from cnnkit.tasks.segment.formats import read_segmentation

    ids = np.zeros((12, 16), np.uint8)
    ids[1:4, 2:6] = 1
    if mode != "1":
        ids[5:12, 10:16] = 2
    photo(tmp_path / "PNGImages" / "x.png", (12, 16))
    (tmp_path / "PedMasks").mkdir()
    if mode == "LA":
        mask = Image.fromarray(np.stack([ids, np.full_like(ids, 255)], -1), "LA")
    elif mode == "1":
        mask = Image.fromarray(ids * 255).convert("1")
    elif mode == "F":  # a float TIFF: ids past 255 stay apart
        mask = Image.fromarray(ids.astype(np.float32) * 300)
    else:
        mask = Image.fromarray(ids.astype(np.uint16) * 1000)
    mask.save(tmp_path / "PedMasks" / ("x_mask.tif" if mode == "F" else "x_mask.png"))
    expected = [[2, 1, 6, 4]] if mode == "1" else [[2, 1, 6, 4], [10, 5, 16, 12]]
    assert read_detection(tmp_path, val_split=0).train.targets[0].boxes.tolist() == expected
    mask_file = next((tmp_path / "PedMasks").iterdir())
    assert read_instance_mask(mask_file).shape == (12, 16)
    people = read_segmentation(tmp_path, val_split=0)
    assert people.skipped == []
    assert np.array_equal(np.asarray(people.train.masks[0]), (ids > 0).astype(np.int64))


# ---------------------------------------------------------------- options and errors


def test_max_size_shrinks_images_and_boxes_but_never_enlarges(tmp_path):
    write_coco(tmp_path, [("big", (60, 80), [(0, (8, 6, 40, 30))]), ("small", (10, 12), [])])
    data = read_detection(tmp_path, val_split=0, max_size=40).train
    big, small = by_stem(data)["big"], by_stem(data)["small"]
    assert big[4] == (30, 40) and big[3] == (60, 80)
    assert big[0].tolist() == [[4, 3, 20, 15]]
    assert small[4] == small[3] == (10, 12)
    assert data.stored_scale(data.paths.index(str(tmp_path / "images/train/big.png"))) == (2, 2)


def test_seeded_split_is_deterministic(tmp_path):
    many = [(f"i{k:02d}", (8, 8), [(k % 2, (1, 1, 4, 4))]) for k in range(20)]
    write_yolo(tmp_path, many)
    first = read_detection(tmp_path, val_split=0.2, seed=1)
    again = read_detection(tmp_path, val_split=0.2, seed=1)
    other = read_detection(tmp_path, val_split=0.2, seed=2)
    assert first.val_source == "split" and len(first.val) == 4 and len(first.train) == 16
    assert first.val.paths == again.val.paths and first.val.paths != other.val.paths
    assert sorted(first.train.paths + first.val.paths) == sorted(
        other.train.paths + other.val.paths
    )


def test_paths_that_are_no_known_layout_raise_one_clear_error(tmp_path):
    photo(tmp_path / "just_images" / "a.png", (8, 8))
    (tmp_path / "notes.txt").write_text("hello")
    (tmp_path / "bad.json").write_text("{not json")
    for path, message in [
        (tmp_path / "just_images", "no detection dataset layout"),
        (tmp_path / "notes.txt", "not a detection dataset file"),
        (tmp_path / "nowhere", "data path not found"),
        (tmp_path / "bad.json", "cannot read COCO annotations"),
    ]:
        with pytest.raises(CnnkitError, match=message) as info:
            read_detection(path)
        assert "\n" not in str(info.value)
    with pytest.raises(CnnkitError, match="val_split"):
        read_detection(tmp_path, val_split=1.0)


def test_a_dataset_without_one_readable_image_is_an_error(tmp_path):
    write_yolo(tmp_path, SAMPLES[:1])
    corrupt_png(tmp_path / "images" / "train" / "a.png")
    with pytest.raises(CnnkitError, match="no readable images .*truncated PNG"):
        read_detection(tmp_path)


# ---------------------------------------------------------------- inspection


def test_inspect_counts_splits_classes_sizes_and_problems(tmp_path):
    write_voc(tmp_path, SAMPLES)
    corrupt_png(tmp_path / "JPEGImages" / "b.png")
    report = inspect_detection(tmp_path, val_split=0)
    assert report.format == "voc" and report.val_source == "none"
    train = report.splits["train"]
    assert (train.images, train.background, train.boxes, train.crowd) == (3, 1, 5, 0)
    assert report.boxes_per_class == {"cat": {"train": 3}, "dog": {"train": 2}}
    # a 30x40, c 20x20, d 32x28 -> per-axis W min 20 / median 28 / max 40, H 20 / 30 / 32
    assert report.image_sizes == {"min": (20, 20), "median": (28, 30), "max": (40, 32)}
    # areas 70, 500, 96, 45, 120: all under 32^2
    assert report.box_sizes == {"small": 5, "medium": 0, "large": 0}
    lines = report.lines()
    assert "train: 3 images (1 background), 5 boxes" in lines
    assert any(re.fullmatch(r"  cat\s+3  \(train 3\)", line) for line in lines)
    assert f"    {tmp_path / 'JPEGImages' / 'b.png'}: truncated PNG" in lines
    assert json.loads(json.dumps(report.to_dict()))["splits"]["train"]["boxes"] == 5


# ---------------------------------------------------------------- the shared real data


@pytest.mark.shared_data
def test_pennfudan_masks_give_one_box_per_mask_id():
    root = shared_dataset("pennfudan")
    splits = read_detection(root, val_split=0)
    data = splits.train
    assert splits.format == "masks" and splits.classes == ["person"] and splits.skipped == []
    assert len(data) == 120 and splits.dropped_boxes == 0
    ids = {
        p.name.removesuffix("_mask.png"): len(
            np.setdiff1d(np.unique(np.asarray(Image.open(p))), [0])
        )
        for p in (root / "PedMasks").glob("*_mask.png")
    }
    assert data.box_count() == sum(ids.values())
    # The PASCAL text boxes are hand-drawn and 1-based: (Xmin - 1, Ymin - 1, Xmax, Ymax) should
    # agree with the mask-derived boxes to a pixel for nearly every person.
    close, total = 0, 0
    for path, target in zip(data.paths, data.targets, strict=True):
        stem = Path(path).stem
        assert len(target) == ids[stem]
        text = (root / "Annotation" / f"{stem}.txt").read_text()
        corners = re.findall(r"\((\d+), (\d+)\) - \((\d+), (\d+)\)", text)
        pascal = torch.tensor([[int(a) - 1, int(b) - 1, int(c), int(d)] for a, b, c, d in corners])
        assert len(pascal) == len(target)
        diff = (target.boxes - pascal).abs().amax(dim=1)
        close += int((diff <= 1).sum())
        total += len(diff)
        assert diff.max() <= 8
    assert close / total >= 0.95


@pytest.mark.shared_data
def test_coco128_yolo_reads_every_name_image_and_label_line():
    root = shared_dataset("coco128")
    names = yaml.safe_load((root / "data.yaml").read_text())["names"]
    splits = read_detection(root, val_split=0.1, seed=0)
    assert splits.format == "yolo" and splits.classes == [names[i] for i in range(80)]
    assert splits.val_source == "split" and len(splits.notes) == 1  # val == train in data.yaml
    images = sorted((root / "images" / "train2017").glob("*.jpg"))
    assert len(splits.train) + len(splits.val) == len(images) == 128
    lines = 0
    for image in images:
        label = root / "labels" / "train2017" / f"{image.stem}.txt"
        if label.exists():
            lines += sum(1 for line in label.read_text().splitlines() if line.strip())
    assert splits.train.box_count() + splits.val.box_count() == lines
    orphans = {p.stem for p in (root / "labels" / "train2017").glob("*.txt")} - {
        p.stem for p in images
    }
    assert sorted(Path(f).stem for f, _ in splits.skipped) == sorted(orphans)


@pytest.mark.parametrize("layout", ["yolo", "coco"])
def test_a_class_name_given_twice_is_refused_in_one_line(tmp_path, layout):
    """Two ids named alike would share one row of counts and AP: refused, naming the file."""
    if layout == "yolo":
        write_yolo(tmp_path, SAMPLES, ["person", "car", "person"])
        source = tmp_path / "data.yaml"
    else:
        source = write_coco(tmp_path, SAMPLES, ["person", "person"])
    with pytest.raises(CnnkitError, match=r"names 'person' more than once") as err:
        read_detection(tmp_path)
    assert str(source) in str(err.value)
    with pytest.raises(CnnkitError, match="more than once"):
        inspect_detection(tmp_path)


def test_an_unused_coco_category_named_like_a_class_is_left_out_with_a_note(tmp_path):
    """Roboflow's exports add a root category (id 0) named after the dataset, which may be a
    class's name; it holds no annotation, so it is dropped instead of refusing the data."""
    path = write_coco(tmp_path, SAMPLES)
    data = json.loads(path.read_text())
    data["categories"].insert(0, {"id": 0, "name": CLASSES[0], "supercategory": "none"})
    path.write_text(json.dumps(data))
    splits = read_detection(tmp_path, val_split=0)
    assert splits.classes == CLASSES
    assert any(f"category id 0 ('{CLASSES[0]}') holds no annotation" in n for n in splits.notes)


def test_a_mask_claiming_too_many_pixels_is_skipped_without_a_warning(tmp_path, recwarn):
    """A mask whose header claims 95 M pixels (over PIL's bomb limit) is refused before it is
    decoded, named in `skipped`, for both tasks; PIL's warning never reaches the user."""
    import struct
    import zlib

    from cnnkit.tasks.segment.formats import read_segmentation

    root = write_masks(tmp_path / "ped", SAMPLES, images="PNGImages", masks="PedMasks")
    photo(root / "PNGImages" / "huge.png", (10, 10))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", 10_000, 9_500, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0"))
    (root / "PedMasks" / "huge_mask.png").write_bytes(bomb + chunk(b"IEND", b""))
    for splits in (read_detection(root, val_split=0), read_segmentation(root, val_split=0)):
        reasons = dict(splits.skipped)
        assert "exceeds limit" in reasons[str(root / "PedMasks" / "huge_mask.png")]
        assert len(splits.train) == len(SAMPLES)
    assert not [w for w in recwarn if "decompression" in str(w.message).lower()]
