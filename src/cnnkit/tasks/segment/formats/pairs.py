"""Image + mask PNG pairs: ``images/`` + ``masks/`` (optionally with split subfolders such as
``train2017/``), Penn-Fudan's ``PNGImages/`` + ``PedMasks/``, or the folders a
``segmentation.yaml`` names per split (``train: {images: ..., masks: ...}``, as coco128's).
A mask is paired with the image of the same file stem (an optional ``_mask`` suffix on the mask).

Two readings of a mask's values (``instances``):

- ``"classes"``: each value is a class, named by a names file (see ``classes.py``): the YAML's
  ``classes``, else ``classes.yaml`` / ``classes.txt`` beside the folders. Without one the
  folder is refused, since a 0/255 or 0/1 mask could mean either reading.
- ``"foreground"``: the values are object ids of one class (0 background, 1..N objects, as
  Penn-Fudan's PedMasks; an RGB mask's colours are objects too), read as 0 background and 1
  the class, named by a one-line ``classes.txt`` (two lines name both), else ``person`` for the
  PedMasks layout, else ``object``. 255 beside other ids is VOC's void outline and stays ignore.
- ``"auto"`` (the default): ``foreground`` for the PedMasks layout, ``classes`` otherwise.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import CnnkitError, did_you_mean
from cnnkit.tasks.detect.formats.masks import (
    Folders,
    layout_folders,
    lossy_mask_note,
    mask_pairs,
    object_ids,
    read_instance_mask,
)
from cnnkit.tasks.detect.formats.records import mark_split
from cnnkit.tasks.segment.dataset import IGNORE_INDEX
from cnnkit.tasks.segment.formats.classes import (
    ClassMap,
    class_map_of,
    load_yaml,
    read_classes_txt,
    yaml_names,
)
from cnnkit.tasks.segment.formats.records import (
    FileMask,
    MaskError,
    ParsedSegmentation,
    SampleRecord,
)

INSTANCE_MODES = ("auto", "foreground", "classes")
YAML_NAMES = ("segmentation.yaml", "segmentation.yml")
NAME_FILES = ("classes.yaml", "classes.yml", "classes.txt")
SPLITS = ("train", "val", "test")


class NoClassNames(CnnkitError):
    """Class masks without a names file (a segmenter of one class reads them as instances)."""


def check_instances(instances: str) -> str:
    if instances not in INSTANCE_MODES:
        raise did_you_mean("instances mode", str(instances), INSTANCE_MODES)
    return instances


def find_yaml(path: Path) -> Path | None:
    """The segmentation YAML: the path itself or segmentation.yaml in that folder."""
    if path.is_file():
        return path if path.suffix.lower() in (".yaml", ".yml") else None
    return next((path / n for n in YAML_NAMES if (path / n).is_file()), None)


def yaml_folders(path: Path, data: dict[str, Any], notes: list[str]) -> Folders:
    """The split folders a segmentation YAML names ({} when it names none); a val or test
    folder that is missing is left out with a note, a missing train is an error."""
    root = path.parent
    if data.get("path"):  # a relative `path:` is from the YAML file's folder
        given = Path(str(data["path"]))
        root = given if given.is_absolute() else path.parent / given
    found: Folders = {}
    for split in SPLITS:
        entry = data.get(split)
        if entry is None:
            continue
        if not isinstance(entry, dict) or not {"images", "masks"} <= set(entry):
            raise CnnkitError(f"{path}: '{split}' must give 'images' and 'masks' folders")
        images, masks = root / str(entry["images"]), root / str(entry["masks"])
        folders = {"images": images, "masks": masks}
        missing = [str(entry[k]) for k, folder in folders.items() if not folder.is_dir()]
        if not missing:
            found[split] = (images, masks)
        elif split == "train":
            raise CnnkitError(f"{path}: train folder {missing[0]} not found under {root}")
        else:
            notes.append(f"{path.name}'s {split} folder {missing[0]} not found: read without it")
    return found


class ManyClassNames(CnnkitError):
    """Instance masks of one class asked for, and the data names more classes than that."""


def foreground_classes(names_file: Path | None, default: str) -> list[str]:
    """[background, the class]: a names file (classes.txt or a YAML's classes / names) of one
    name, or two with background's first; ``default`` names the class when there is none."""
    if names_file is None:
        return ["background", default]
    if names_file.suffix.lower() in (".yaml", ".yml"):
        names = list(yaml_names(names_file, load_yaml(names_file)).values())
    else:
        names = list(read_classes_txt(names_file).values())
    if len(names) == 1:
        return ["background", names[0]]
    if len(names) == 2:
        return names
    raise ManyClassNames(
        f"{names_file} names {len(names)} classes; instance masks of one class need one name "
        "(or two: background, then the class)"
    )


def instance_ids(path: str) -> np.ndarray:
    """An instance mask's object ids (detection's reader), failures as MaskError."""
    try:
        return read_instance_mask(path)
    except CnnkitError as e:
        raise MaskError(str(e).removeprefix(f"{path}: ")) from None


def to_foreground(ids: np.ndarray) -> np.ndarray:
    """Object ids -> 0 background, 1 object, 255 ignore (255 beside other ids: VOC's void)."""
    objects = np.isin(ids, object_ids(ids))
    out = np.zeros(ids.shape, dtype=np.uint8)
    out[objects] = 1
    out[(ids != 0) & ~objects] = IGNORE_INDEX
    return out


def _names_file(root: Path, yaml_path: Path | None, data: dict[str, Any]) -> Path | None:
    if yaml_path is not None and ("classes" in data or "names" in data):
        return yaml_path
    return next((root / n for n in NAME_FILES if (root / n).is_file()), None)


def parse_pairs(path: Path, instances: str = "auto") -> ParsedSegmentation:
    """Pair every mask with its image and say how its values become classes."""
    check_instances(instances)
    yaml_path = find_yaml(path)
    root = yaml_path.parent if yaml_path is not None else path
    data = load_yaml(yaml_path) if yaml_path is not None else {}
    notes: list[str] = []
    folders = yaml_folders(yaml_path, data, notes) if yaml_path is not None else {}
    default, pedmasks = "object", False
    layout = layout_folders(root)
    if layout is not None:
        if not folders:
            folders = layout.folders
            notes += layout.notes
        default, pedmasks = layout.default_class, layout.pedmasks
    if not folders:
        raise CnnkitError(f"{path}: no image and mask folders (images/ + masks/) found")
    foreground = instances == "foreground" or (instances == "auto" and pedmasks)
    if foreground:
        classes = foreground_classes(_names_file(root, yaml_path, data), default)
        to_classes, read = to_foreground, instance_ids
        notes.append(
            f"instance masks: object ids read as '{classes[1]}', 0 as '{classes[0]}'"
            + (" (Penn-Fudan's PedMasks layout)" if instances == "auto" else "")
        )
    else:
        names_file = _names_file(root, yaml_path, data)
        if names_file is None:
            raise NoClassNames(
                f"{root} has no class names for its masks: add classes.txt (line k names mask "
                "value k), or read them as instance masks of one class (train --instances "
                "foreground; instances='foreground' in Python)"
            )
        class_map: ClassMap = class_map_of(names_file)
        classes, to_classes, read = class_map.classes, class_map.apply, None
        notes += class_map.notes
    mode = "foreground" if foreground else "classes"
    parsed = ParsedSegmentation("masks", classes, {}, notes=notes, instances=mode)
    all_pairs = {split: mask_pairs(images, masks) for split, (images, masks) in folders.items()}
    parsed.notes += lossy_mask_note([m for pairs, _ in all_pairs.values() for _, m in pairs])
    for split, (pairs, unpaired) in all_pairs.items():
        mark_split(parsed.skipped_in, parsed.skipped + unpaired, len(parsed.skipped), split)
        parsed.skipped += unpaired
        parsed.splits[split] = [
            SampleRecord(str(image), FileMask(str(mask), to_classes, read), str(mask))
            for image, mask in pairs
        ]
    return parsed
