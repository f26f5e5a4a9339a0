"""Segmentation readers (mask PNGs, VOC palettes, COCO polygons / RLE, instance masks), their
class mapping, splits and problems, inspection, and the shared coco128 / Penn-Fudan data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.tasks.segment.dataset import IGNORE_INDEX, SegmentationSet
from cnnkit.tasks.segment.formats import VOC_CLASSES, read_segmentation, segmentation_format
from cnnkit.tasks.segment.inspect import inspect_segmentation
from detect_files import corrupt_png, photo, shared_dataset
from segment_files import (
    CLASSES,
    SAMPLES,
    class_mask,
    save_mask,
    write_classes,
    write_coco,
    write_pairs,
    write_voc,
    write_yaml,
)


def masks_by_stem(data: SegmentationSet) -> dict[str, np.ndarray]:
    return {Path(p).stem: m.numpy() for p, m in zip(data.paths, data.masks, strict=True)}


def read_all(path, **options) -> SegmentationSet:
    splits = read_segmentation(path, val_split=0, **options)
    assert splits.val is None and splits.val_source == "none"
    return splits.train


def reasons(splits) -> dict[str, str]:
    return {Path(f).name: r for f, r in splits.skipped}


# ---------------------------------------------------------------- one mask, three formats


def test_the_same_masks_in_every_format_give_identical_class_masks(tmp_path):
    write_pairs(tmp_path / "masks")
    write_voc(tmp_path / "voc")
    write_coco(tmp_path / "coco", category_ids=[3, 7])  # non-contiguous ids -> 1, 2
    for fmt in ("masks", "voc", "coco"):
        splits = read_segmentation(tmp_path / fmt, val_split=0)
        assert segmentation_format(tmp_path / fmt) == splits.format == fmt
        assert splits.classes == CLASSES and splits.skipped == [], fmt
        got = masks_by_stem(splits.train)
        assert sorted(got) == [s for s, _, _ in SAMPLES], fmt
        for stem, size, objects in SAMPLES:
            assert got[stem].dtype == np.uint8
            np.testing.assert_array_equal(got[stem], class_mask(size, objects), err_msg=fmt)


def test_images_decode_to_the_files_pixels_with_their_sizes(tmp_path):
    write_pairs(tmp_path)
    data = read_all(tmp_path)
    for i, path in enumerate(data.paths):
        pixels = np.array(Image.open(path).convert("RGB"))
        assert torch.equal(data.images[i], torch.from_numpy(pixels).permute(2, 0, 1))
        assert data.original_sizes[i] == pixels.shape[:2] == tuple(data.masks[i].shape)
    counts, ignored = data.pixel_counts()
    expected = sum(np.bincount(class_mask(s, o).ravel(), minlength=3) for _, s, o in SAMPLES)
    assert counts.tolist() == expected.tolist() and ignored == 0


# ---------------------------------------------------------------- class names and values


def test_mask_pairs_keep_255_as_ignore_and_read_void_names_as_ignore(tmp_path):
    photo(tmp_path / "images" / "x.png", (8, 10))
    mask = np.zeros((8, 10), np.uint8)
    mask[0, :] = 255
    mask[1:4, 2:6] = 1  # "void" in classes.txt -> ignore
    mask[5:, 5:] = 2
    save_mask(tmp_path / "masks" / "x.png", mask)  # no _mask suffix
    write_classes(tmp_path / "classes.txt", ["road", "void", "car"])
    splits = read_segmentation(tmp_path, val_split=0)
    assert splits.classes == ["road", "car"]
    got = splits.train.masks[0].numpy()
    expected = np.zeros((8, 10), np.uint8)
    expected[0, :] = IGNORE_INDEX
    expected[1:4, 2:6] = IGNORE_INDEX
    expected[5:, 5:] = 1
    np.testing.assert_array_equal(got, expected)
    assert any("1 (void)" in n for n in splits.notes)


def test_yaml_class_ids_need_not_be_contiguous_and_unknown_values_skip_the_mask(tmp_path):
    names = {0: "unlabeled", 5: "road", 12: "car", 40: "sky"}
    write_yaml(tmp_path / "segmentation.yaml", {"classes": names})
    photo(tmp_path / "images" / "ok.png", (6, 8))
    raw = np.array([[0, 5, 12, 40, 255, 5, 5, 5]] * 6, np.uint8)
    save_mask(tmp_path / "masks" / "ok_mask.png", raw)
    photo(tmp_path / "images" / "bad.png", (6, 8))
    save_mask(tmp_path / "masks" / "bad_mask.png", np.full((6, 8), 7, np.uint8))
    splits = read_segmentation(tmp_path, val_split=0)
    assert splits.classes == ["road", "car", "sky"]
    np.testing.assert_array_equal(
        splits.train.masks[0].numpy(), np.array([[255, 0, 1, 2, 255, 0, 0, 0]] * 6)
    )
    assert [Path(p).name for p in splits.train.paths] == ["ok.png"]
    assert len(splits.skipped) == 1
    assert "mask values 7 are not classes in segmentation.yaml" in reasons(splits)["bad_mask.png"]
    assert any("0 (unlabeled)" in n for n in splits.notes)
    assert any("class indices 0..2" in n for n in splits.notes)


def test_sixteen_bit_masks_may_hold_ids_over_255(tmp_path):
    write_yaml(tmp_path / "classes.yaml", {"names": {0: "background", 300: "rare"}})
    photo(tmp_path / "images" / "x.png", (4, 4))
    (tmp_path / "masks").mkdir()
    Image.fromarray(np.array([[0, 300, 300, 0]] * 4, np.uint16)).save(tmp_path / "masks" / "x.png")
    splits = read_segmentation(tmp_path, val_split=0)
    assert splits.classes == ["background", "rare"]
    assert splits.train.masks[0].tolist() == [[0, 1, 1, 0]] * 4


def test_yaml_split_folders_and_a_missing_val_folder(tmp_path):
    root = tmp_path / "data"
    write_pairs(root, SAMPLES[:2], None, "images/train", "masks/train", suffix="")
    write_pairs(root, SAMPLES[2:], None, "images/val", "masks/val", suffix="")
    split_folders = {s: {"images": f"images/{s}", "masks": f"masks/{s}"} for s in ("train", "val")}
    spec = {"classes": dict(enumerate(CLASSES)), **split_folders}
    write_yaml(root / "segmentation.yaml", spec)
    splits = read_segmentation(root)
    assert splits.val_source == "folder"
    assert sorted(masks_by_stem(splits.train)) == ["a", "b"]
    assert sorted(masks_by_stem(splits.val)) == ["c", "d"]
    spec["val"] = {"images": "images/nope", "masks": "masks/nope"}
    write_yaml(root / "other.yaml", spec)
    splits = read_segmentation(root / "other.yaml", val_split=0.25)  # the YAML given directly
    assert splits.val_source == "split" and len(splits.train) == 1 and len(splits.val) == 1
    assert any("val folder images/nope not found" in n for n in splits.notes)


def test_a_yaml_given_by_a_relative_path_finds_its_folders(tmp_path, monkeypatch):
    root = tmp_path / "work" / "data"
    write_pairs(root, SAMPLES, None, "images/train", "masks/train", suffix="")
    train = {"images": "images/train", "masks": "masks/train"}
    write_yaml(root / "seg.yaml", {"classes": dict(enumerate(CLASSES)), "train": train})
    write_yaml(
        root / "up.yaml",
        {
            "path": "..",
            "classes": dict(enumerate(CLASSES)),
            "train": {"images": "data/images/train", "masks": "data/masks/train"},
        },
    )
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    for name in ("seg.yaml", "up.yaml"):  # no path: key, and a relative one
        splits = read_segmentation(f"../work/data/{name}", val_split=0.0)
        assert sorted(masks_by_stem(splits.train)) == ["a", "b", "c", "d"], name


def test_split_subfolders_of_images_and_masks_are_the_splits(tmp_path):
    write_pairs(tmp_path, SAMPLES[:3], CLASSES, "images/train2017", "masks/train2017")
    write_pairs(tmp_path, SAMPLES[3:], CLASSES, "images/val2017", "masks/val2017")
    splits = read_segmentation(tmp_path)
    assert splits.val_source == "folder" and splits.test is None
    assert (len(splits.train), len(splits.val)) == (3, 1)


# ---------------------------------------------------------------- VOC and COCO specifics


def test_voc_palette_masks_with_voc_names_splits_and_void_border(tmp_path):
    sample = ("2007_000032", (12, 16), [(15, (2, 2, 8, 10)), (8, (9, 1, 15, 6))])  # person, cat
    write_voc(tmp_path, [sample, ("2007_000039", (10, 10), [])], classes=None)
    write_voc(tmp_path, [], splits={"train": ["2007_000032"], "val": ["2007_000039"]}, classes=None)
    mask_path = tmp_path / "SegmentationClass" / "2007_000032.png"
    mask = class_mask(sample[1], sample[2])
    mask[1, 1:9] = 255  # VOC's void outline
    save_mask(mask_path, mask, palette=True)
    splits = read_segmentation(tmp_path)
    assert splits.format == "voc" and splits.classes == list(VOC_CLASSES)
    assert splits.val_source == "folder" and splits.skipped == []
    np.testing.assert_array_equal(splits.train.masks[0].numpy(), mask)
    assert splits.classes[15] == "person" and splits.classes[8] == "cat"
    assert splits.val.masks[0].unique().tolist() == [0]
    # the same mask saved as RGB colours reads back through VOC's palette
    Image.open(mask_path).convert("RGB").save(mask_path)
    again = read_segmentation(tmp_path)
    np.testing.assert_array_equal(again.train.masks[0].numpy(), mask)


def test_voc_listed_id_without_mask_or_image_is_reported(tmp_path):
    write_voc(tmp_path, SAMPLES[:2], splits={"train": ["a", "b", "gone"]})
    (tmp_path / "JPEGImages" / "b.png").unlink()
    splits = read_segmentation(tmp_path, val_split=0)
    assert [Path(p).stem for p in splits.train.paths] == ["a"]
    why = reasons(splits)
    assert why["gone.png"].startswith("mask not found (listed in ImageSets")
    assert why["b.jpg"] == "image not found for this mask" and len(why) == 2


def test_coco_rle_crowds_overlaps_and_objects_without_segmentation(tmp_path):
    from pycocotools import mask as coco_mask

    json_path = write_coco(tmp_path, SAMPLES[:2], category_ids=[4, 9])
    data = json.loads(json_path.read_text())
    # image "a" (30x40): its dog becomes a compressed RLE crowd; a cat overlaps the dog
    dog = np.asfortranarray(class_mask((30, 40), [(1, (20, 5, 40, 30))]))
    rle = coco_mask.encode(dog)
    rle["counts"] = rle["counts"].decode("ascii")
    data["annotations"][1].update(segmentation=rle, iscrowd=1)
    overlap = {"id": 90, "image_id": 1, "category_id": 4, "iscrowd": 0}
    overlap["segmentation"] = [[18, 0, 24, 0, 24, 6, 18, 6]]  # cols 18..23, rows 0..5
    data["annotations"].append(overlap)
    # image "b": an object with only a box
    data["annotations"].append({"id": 91, "image_id": 2, "category_id": 9, "bbox": [1, 1, 2, 2]})
    json_path.write_text(json.dumps(data))
    splits = read_segmentation(json_path, val_split=0)  # the .json given directly
    assert splits.classes == CLASSES and any("ids 4..9" in n for n in splits.notes)
    expected = class_mask((30, 40), SAMPLES[0][2])
    expected[0:6, 18:24] = 1  # the extra cat over background...
    expected[5:6, 20:24] = IGNORE_INDEX  # ...and over the dog's top row: ambiguous
    np.testing.assert_array_equal(masks_by_stem(splits.train)["a"], expected)
    assert "annotation 91 has no polygon or RLE segmentation" in reasons(splits)["b.png"]


# ---------------------------------------------------------------- instance masks


def test_instance_masks_read_as_background_and_one_class(tmp_path):
    ids = np.zeros((10, 12), np.uint8)
    ids[1:4, 1:4], ids[5:9, 6:11] = 1, 2
    photo(tmp_path / "ped" / "PNGImages" / "p1.png", (10, 12))
    save_mask(tmp_path / "ped" / "PedMasks" / "p1_mask.png", ids)
    splits = read_segmentation(tmp_path / "ped", val_split=0)  # Penn-Fudan's layout: automatic
    assert splits.classes == ["background", "person"]
    np.testing.assert_array_equal(splits.train.masks[0].numpy(), (ids > 0).astype(np.uint8))
    with pytest.raises(CnnkitError, match="no class names for its masks"):
        read_segmentation(tmp_path / "ped", instances="classes")
    # images/ + masks/ are class masks unless told they are instances
    photo(tmp_path / "obj" / "images" / "o1.png", (10, 12))
    save_mask(tmp_path / "obj" / "masks" / "o1.png", ids)
    write_classes(tmp_path / "obj" / "classes.txt", ["cell"])
    with pytest.raises(CnnkitError, match="mask values 1, 2 are not classes in classes.txt"):
        read_segmentation(tmp_path / "obj", val_split=0)
    splits = read_segmentation(tmp_path / "obj", val_split=0, instances="foreground")
    assert splits.classes == ["background", "cell"]
    assert splits.train.masks[0].sum() == (ids > 0).sum()


# ---------------------------------------------------------------- problems


def test_bad_files_are_reported_once_with_the_reason_and_skipped(tmp_path):
    write_pairs(tmp_path, SAMPLES[:2])
    photo(tmp_path / "images" / "wrong_size.png", (10, 10))
    save_mask(tmp_path / "masks" / "wrong_size_mask.png", np.zeros((10, 12), np.uint8))
    photo(tmp_path / "images" / "out_of_range.png", (6, 6))
    save_mask(tmp_path / "masks" / "out_of_range_mask.png", np.full((6, 6), 3, np.uint8))
    photo(tmp_path / "images" / "no_mask.png", (6, 6))
    corrupt_png(tmp_path / "images" / "broken_image.png")
    save_mask(tmp_path / "masks" / "broken_image_mask.png", np.zeros((16, 16), np.uint8))
    photo(tmp_path / "images" / "broken_mask.png", (16, 16))
    corrupt_png(tmp_path / "masks" / "broken_mask_mask.png")
    photo(tmp_path / "images" / "colour.png", (16, 16))
    photo(tmp_path / "masks" / "colour_mask.png", (16, 16))  # RGB noise, not class values
    save_mask(tmp_path / "masks" / "orphan_mask.png", np.zeros((5, 5), np.uint8))
    splits = read_segmentation(tmp_path, val_split=0)
    assert sorted(masks_by_stem(splits.train)) == ["a", "b"]
    why = reasons(splits)
    assert len(splits.skipped) == len(why) == 7
    assert why["wrong_size_mask.png"] == "mask is 12x10 but its image is 10x10"
    assert why["out_of_range_mask.png"].startswith("mask values 3 are not classes in classes.txt")
    assert why["no_mask.png"] == "no mask for this image in masks/"
    assert why["broken_image.png"] == "truncated PNG"
    assert why["broken_mask_mask.png"].startswith("unreadable mask")
    assert why["colour_mask.png"].startswith("colour mask")
    assert why["orphan_mask.png"] == "image not found for this mask in images/"


def test_paths_that_are_no_dataset_raise_one_line_errors(tmp_path):
    cases = {
        tmp_path / "missing": "data path not found",
        write_classes(tmp_path / "notes.txt", ["x"]): "is not a segmentation dataset file",
        tmp_path: "no segmentation dataset layout",
    }
    for path, message in cases.items():
        with pytest.raises(CnnkitError, match=message) as error:
            read_segmentation(path)
        assert "\n" not in str(error.value)
    write_pairs(tmp_path / "unnamed", SAMPLES[:1], classes=None)
    with pytest.raises(CnnkitError, match="add classes.txt"):
        read_segmentation(tmp_path / "unnamed")
    with pytest.raises(CnnkitError, match="unknown instances mode 'foregound'; did you mean"):
        read_segmentation(tmp_path / "unnamed", instances="foregound")
    write_voc(tmp_path / "voc", SAMPLES[:1])
    with pytest.raises(CnnkitError, match="instances='foreground' reads image"):
        read_segmentation(tmp_path / "voc", instances="foreground")


def test_a_dataset_without_one_usable_pair_is_an_error(tmp_path):
    photo(tmp_path / "images" / "a.png", (8, 8))
    save_mask(tmp_path / "masks" / "a_mask.png", np.full((8, 8), 9, np.uint8))
    write_classes(tmp_path / "classes.txt", CLASSES)
    with pytest.raises(CnnkitError, match="no readable image and mask pairs") as error:
        read_segmentation(tmp_path)
    assert "mask values 9" in str(error.value) and "\n" not in str(error.value)


def test_max_size_shrinks_masks_by_nearest_neighbour_and_never_enlarges(tmp_path):
    big = ("big", (40, 80), [(1, (0, 0, 40, 40)), (2, (40, 20, 80, 40))])
    write_pairs(tmp_path, [big, SAMPLES[2]])
    data = read_all(tmp_path, max_size=20)
    got = masks_by_stem(data)
    expected = np.zeros((10, 20), np.uint8)
    expected[:, :10], expected[5:, 10:] = 1, 2
    np.testing.assert_array_equal(got["big"], expected)
    assert tuple(data.images[0].shape) == (3, 10, 20) and data.original_sizes[0] == (40, 80)
    assert data.stored_scale(0) == (4.0, 4.0)
    assert got["c"].shape == (20, 20)  # not enlarged


def test_seeded_split_is_deterministic_and_keeps_file_order(tmp_path):
    many = [(f"s{i:02d}", (8, 8), [(1, (0, 0, i % 8 + 1, 4))]) for i in range(20)]
    write_pairs(tmp_path, many)
    first = read_segmentation(tmp_path, val_split=0.25, seed=3)
    again = read_segmentation(tmp_path, val_split=0.25, seed=3)
    other = read_segmentation(tmp_path, val_split=0.25, seed=4)
    assert first.val_source == "split" and len(first.val) == 5 and len(first.train) == 15
    assert first.val.paths == again.val.paths == sorted(first.val.paths)
    assert first.val.paths != other.val.paths
    assert not set(first.val.paths) & set(first.train.paths)


def test_inspect_reports_splits_sizes_pixel_shares_and_problems(tmp_path):
    write_pairs(tmp_path, SAMPLES)
    photo(tmp_path / "images" / "lonely.png", (6, 6))
    report = inspect_segmentation(tmp_path, val_split=0)
    total = sum(np.bincount(class_mask(s, o).ravel(), minlength=3) for _, s, o in SAMPLES)
    shares = {c: report.class_shares[c].pixel_share for c in CLASSES}
    assert shares == pytest.approx({c: total[i] / total.sum() for i, c in enumerate(CLASSES)})
    assert {c: report.class_shares[c].images for c in CLASSES} == {
        "background": 4,
        "cat": 2,
        "dog": 3,
    }
    assert report.splits == {"train": 4} and report.ignored_share == 0
    assert report.image_sizes["max"] == (40, 32)
    text = "\n".join(report.lines())
    assert "format: masks" in text and "train: 4 images" in text
    assert "lonely.png: no mask for this image" in text
    json.dumps(report.to_dict())
    write_classes(tmp_path / "classes.txt", [*CLASSES, "bird"])
    report = inspect_segmentation(tmp_path, val_split=0)
    assert report.absent_classes == ["bird"] and "  classes no mask holds: bird" in report.lines()


# ---------------------------------------------------------------- the shared data


def test_coco128_masks_map_panoptic_ids_through_segmentation_yaml():
    root = shared_dataset("coco128")
    names = yaml.safe_load((root / "segmentation.yaml").read_text())["classes"]
    splits = read_segmentation(root, val_split=0)
    kept_ids = sorted(i for i, n in names.items() if n != "unlabeled")
    assert splits.format == "masks" and splits.classes == [names[i] for i in kept_ids]
    data = splits.train
    mask_files = sorted((root / "masks" / "train2017").glob("*.png"))
    assert len(data) == len(mask_files) == 100
    assert len(splits.skipped) == 28
    assert all(r.startswith("no mask for this image") for _, r in splits.skipped)
    to_id = np.array([*kept_ids, *[-1] * (256 - len(kept_ids))])
    to_id[IGNORE_INDEX] = 0
    for i in (0, 37, 99):
        raw = np.asarray(Image.open(mask_files[i])).astype(np.int64)
        assert Path(data.paths[i]).stem == mask_files[i].stem
        np.testing.assert_array_equal(to_id[data.masks[i].numpy()], raw)
        assert data.images[i].shape[1:] == data.masks[i].shape
    assert "person" in splits.classes and splits.classes.index("person") == 0


def test_pennfudan_reads_120_person_masks():
    root = shared_dataset("pennfudan")
    splits = read_segmentation(root, val_split=0)
    data = splits.train
    assert splits.classes == ["background", "person"] and splits.skipped == []
    assert splits.format == "masks" and len(data) == 120
    assert all(set(m.unique().tolist()) == {0, 1} for m in data.masks)
    for i in (0, 59, 119):
        ids = np.asarray(Image.open(root / "PedMasks" / f"{Path(data.paths[i]).stem}_mask.png"))
        assert ids.max() >= 1  # instance ids 1..N, one per person
        np.testing.assert_array_equal(data.masks[i].numpy(), (ids > 0).astype(np.uint8))


def test_datasets_inspect_task_segment_reports_pennfudans_person_share(capsys):
    """`cnnkit datasets --inspect PATH --task segment --json`: Penn-Fudan as person/background,
    the person share close to the share of non-zero PedMasks pixels counted here directly."""
    from cnnkit.cli import main

    root = shared_dataset("pennfudan")
    assert main(["datasets", "--inspect", str(root), "--task", "segment", "--json"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["classes"] == ["background", "person"]
    assert sum(found["splits"].values()) == 120
    person = total = 0
    for mask_path in sorted((root / "PedMasks").glob("*.png")):
        mask = np.asarray(Image.open(mask_path))
        person, total = person + int((mask > 0).sum()), total + mask.size
    shares = found["class_shares"]
    # inspection counts on masks shrunk to 320 px by nearest neighbour: within half a point
    assert shares["person"]["pixel_share"] == pytest.approx(person / total, abs=0.005)
    assert shares["person"]["images"] == 120
    assert main(["datasets", "--inspect", str(root), "--task", "segment"]) == 0
    assert "person" in capsys.readouterr().out


def test_datasets_inspect_reads_instance_masks_with_the_instances_option(tmp_path, capsys):
    from cnnkit.cli import main

    photo(tmp_path / "images" / "x.png", (8, 10))
    mask = np.zeros((8, 10), np.uint8)
    mask[1:5, 2:4], mask[5:7, 6:9] = 1, 2  # two objects: a quarter of the pixels
    save_mask(tmp_path / "masks" / "x.png", mask)
    args = ["datasets", "--inspect", str(tmp_path), "--task", "segment", "--json"]
    assert main(args) == 2
    assert "--instances foreground" in capsys.readouterr().err  # no names: which reading?
    assert main([*args, "--instances", "foreground"]) == 0
    found = json.loads(capsys.readouterr().out)
    assert found["classes"] == ["background", "object"]
    assert found["class_shares"]["object"]["pixel_share"] == pytest.approx(14 / 80)


def test_a_class_name_given_twice_is_refused_in_one_line(tmp_path):
    photo(tmp_path / "images" / "x.png", (8, 10))
    save_mask(tmp_path / "masks" / "x.png", np.zeros((8, 10), np.uint8))
    write_classes(tmp_path / "classes.txt", ["background", "person", "person"])
    with pytest.raises(CnnkitError, match=r"classes.txt names 'person' more than once"):
        read_segmentation(tmp_path, val_split=0)
    with pytest.raises(CnnkitError, match="more than once"):
        inspect_segmentation(tmp_path)


def test_ignore_names_may_repeat_in_a_yaml(tmp_path):
    write_yaml(tmp_path / "segmentation.yaml", {"classes": {0: "void", 1: "road", 254: "void"}})
    photo(tmp_path / "images" / "x.png", (6, 8))
    save_mask(tmp_path / "masks" / "x.png", np.array([[0, 1, 254, 1, 1, 1, 1, 1]] * 6, np.uint8))
    splits = read_segmentation(tmp_path, val_split=0)
    assert splits.classes == ["road"]
    np.testing.assert_array_equal(
        splits.train.masks[0].numpy(), np.array([[255, 0, 255, 0, 0, 0, 0, 0]] * 6)
    )
    write_yaml(tmp_path / "segmentation.yaml", {"classes": {0: "road", 1: "road"}})
    with pytest.raises(CnnkitError, match="segmentation.yaml names 'road' more than once"):
        read_segmentation(tmp_path, val_split=0)
