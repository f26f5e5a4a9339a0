"""Class names and the map from stored mask values to class indices.

A names file gives each stored value a name: ``classes.txt`` (line k names value k) or a YAML
whose ``classes`` (or ``names``) is a list or an ``{id: name}`` mapping with any ids (COCO's
panoptic ids in coco128's segmentation.yaml). The named values, in increasing order, become
class indices 0..C-1. A value named ``unlabeled`` / ``unlabelled`` / ``void`` / ``ignore`` is
read as ignore (255) instead of a class, and 255 is always ignore. A mask pixel whose value the
file does not name makes that mask unusable (the image is skipped with the values listed):
guessing what it meant would put wrong labels into training.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from cnnkit.errors import CnnkitError
from cnnkit.tasks.detect.formats.records import refuse_repeated_names
from cnnkit.tasks.detect.formats.yolo import class_names
from cnnkit.tasks.segment.dataset import IGNORE_INDEX, MAX_CLASSES
from cnnkit.tasks.segment.formats.records import MaskError

IGNORE_NAMES = frozenset({"unlabeled", "unlabelled", "void", "ignore", "ignored"})
SHOWN_VALUES = 5


@dataclass
class ClassMap:
    """Stored mask value -> class index (or IGNORE_INDEX), and the class names."""

    classes: list[str]
    index_of: dict[int, int]  # stored value -> class index or IGNORE_INDEX
    source: str  # where the names came from, for messages
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        if len(self.classes) > MAX_CLASSES:
            raise CnnkitError(
                f"{self.source} names {len(self.classes)} classes; masks hold at most "
                f"{MAX_CLASSES} (value 255 is ignore)"
            )
        if not self.classes:
            raise CnnkitError(f"{self.source} names no classes")
        refuse_repeated_names(self.classes, self.source)
        self.index_of.setdefault(IGNORE_INDEX, IGNORE_INDEX)
        self._table = np.full(max(self.index_of) + 1, -1, dtype=np.int64)
        for value, index in self.index_of.items():
            self._table[value] = index

    @classmethod
    def from_names(cls, names: dict[int, str], source: str) -> ClassMap:
        """Contiguous indices for named values (increasing), ignore for ignore-named ones."""
        kept = sorted(v for v, n in names.items() if n.strip().lower() not in IGNORE_NAMES)
        ignored = sorted(set(names) - set(kept))
        if not kept or kept == [IGNORE_INDEX]:
            raise CnnkitError(f"{source} names no classes (only values read as ignore)")
        if IGNORE_INDEX in kept:
            kept.remove(IGNORE_INDEX)
            ignored.append(IGNORE_INDEX)
        index_of = {v: i for i, v in enumerate(kept)}
        index_of.update({v: IGNORE_INDEX for v in ignored})
        notes = []
        if ignored:
            shown = ", ".join(f"{v} ({names.get(v, 'ignore')})" for v in ignored)
            notes.append(f"mask values read as ignore (255): {shown}")
        if kept != list(range(len(kept))):
            notes.append(
                f"{Path(source).name}'s {len(kept)} class ids ({kept[0]}..{kept[-1]}, with gaps)"
                f" are class indices 0..{len(kept) - 1} in id order"
            )
        return cls([names[v] for v in kept], index_of, source, notes)

    def apply(self, values: np.ndarray) -> np.ndarray:
        """(H, W) stored values -> (H, W) uint8 class indices; MaskError naming the values
        the names file does not know."""
        table = self._table
        inside = values < len(table)
        mapped = np.where(inside, table[np.where(inside, values, 0)], -1)
        if (mapped < 0).any():
            unknown = np.unique(values[mapped < 0])
            shown = ", ".join(str(int(v)) for v in unknown[:SHOWN_VALUES])
            more = f" (+{len(unknown) - SHOWN_VALUES} more)" if len(unknown) > SHOWN_VALUES else ""
            raise MaskError(
                f"mask values {shown}{more} are not classes in {Path(self.source).name} "
                f"(known: {self.describe_values()})"
            )
        return mapped.astype(np.uint8)

    def describe_values(self) -> str:
        """The stored values that are classes, for messages."""
        values = sorted(v for v in self.index_of if v != IGNORE_INDEX)
        if values == list(range(len(values))):
            return f"0..{len(values) - 1}, 255 ignore"
        return ", ".join(str(v) for v in values[:8]) + (", ..." if len(values) > 8 else "")


def read_classes_txt(path: Path) -> dict[int, str]:
    """``classes.txt``: line k (from 0) names value k; blank lines may only end the file."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise CnnkitError(f"cannot read class names {path}: {e}") from None
    while lines and not lines[-1].strip():
        lines.pop()
    for n, line in enumerate(lines, 1):
        if not line.strip():
            raise CnnkitError(f"{path}:{n} is empty; line k names mask value k, so name each")
    return {k: line.strip() for k, line in enumerate(lines)}


def load_yaml(path: Path) -> dict[str, Any]:
    """A segmentation YAML as a dict (CnnkitError for an unreadable or non-mapping file)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise CnnkitError(f"cannot read segmentation dataset file {path}: {e}") from None
    if not isinstance(data, dict):
        raise CnnkitError(f"{path} must be a mapping with 'classes' (id: name)")
    return data


def yaml_names(path: Path, data: dict[str, Any]) -> dict[int, str]:
    """Value -> name from a YAML's ``classes`` or ``names`` (a list or an {id: name} map)."""
    names = data.get("classes", data.get("names"))
    if names is None:
        raise CnnkitError(f"{path} has no 'classes' (id: name) naming the mask values")
    listed, index_of = class_names(path, names)
    if any(v < 0 for v in index_of):
        raise CnnkitError(f"{path}: class ids must be mask values 0 and up")
    return {value: listed[index] for value, index in index_of.items()}


def class_map_of(path: Path) -> ClassMap:
    """The ClassMap of a names file (classes.txt, or a YAML with classes / names)."""
    if path.suffix.lower() in (".yaml", ".yml"):
        return ClassMap.from_names(yaml_names(path, load_yaml(path)), str(path))
    return ClassMap.from_names(read_classes_txt(path), str(path))
