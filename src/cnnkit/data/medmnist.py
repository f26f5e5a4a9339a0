"""MedMNIST v2's npz files (Yang et al., Scientific Data 2023) -> ImageSets.

Each file holds ``{split}_images`` ((N, 28, 28) grey or (N, 28, 28, 3) RGB uint8) and
``{split}_labels`` ((N, 1) class indices; (N, 14) multi-hot for ChestMNIST) for train, val and
test. Labels with several columns are read as multi-label data: 0/1 columns, one per finding
(ChestMNIST's 14 named as MedMNIST's INFO names them, other files' "0", "1", ...).
A named set (``pneumoniamnist``, ...) is read from <data root>/<name>.npz and downloaded
from MedMNIST's Zenodo record with its MD5 (MedMNIST's own INFO) when absent and allowed. Grey
images are repeated into three channels, so every model (scratch or ImageNet-pretrained) takes
them as they are.
"""

from __future__ import annotations

import os
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data.imageset import ImageSet
from cnnkit.data.pixels import image_stack_to_uint8
from cnnkit.errors import CnnkitError, ImageDecodeError

RECORD = "https://zenodo.org/records/10519652/files"


@dataclass(frozen=True)
class MedMnistSet:
    md5: str  # of the 28 x 28 file, as MedMNIST's INFO gives it
    task: str  # binary-class | multi-class | ordinal-regression | multi-label
    classes: tuple[str, ...]
    description: str

    def url(self, name: str) -> str:
        return f"{RECORD}/{name}.npz?download=1"


# the 2D sets of MedMNIST v2 at 28 x 28 (medmnist 3.0.2's INFO: MD5s, tasks, label names)
MEDMNIST: dict[str, MedMnistSet] = {
    "pneumoniamnist": MedMnistSet(
        "28209eda62fecd6e6a2d98b1501bb15f",
        "binary-class",
        ("normal", "pneumonia"),
        "MedMNIST PneumoniaMNIST: 5,856 paediatric chest X-rays, grey 28x28, normal / pneumonia",
    ),
    "breastmnist": MedMnistSet(
        "750601b1f35ba3300ea97c75c52ff8f6",
        "binary-class",
        ("malignant", "normal, benign"),
        "MedMNIST BreastMNIST: 780 breast ultrasounds, grey 28x28, malignant / normal or benign",
    ),
    "retinamnist": MedMnistSet(
        "bd4c0672f1bba3e3a89f0e4e876791e4",
        "ordinal-regression",
        ("0", "1", "2", "3", "4"),
        "MedMNIST RetinaMNIST: 1,600 retina fundus photos, RGB 28x28, 5 grades of diabetic"
        " retinopathy",
    ),
    "dermamnist": MedMnistSet(
        "0744692d530f8e62ec473284d019b0c7",
        "multi-class",
        (
            "actinic keratoses and intraepithelial carcinoma",
            "basal cell carcinoma",
            "benign keratosis-like lesions",
            "dermatofibroma",
            "melanoma",
            "melanocytic nevi",
            "vascular lesions",
        ),
        "MedMNIST DermaMNIST: 10,015 dermatoscope images, RGB 28x28, 7 skin lesions",
    ),
    "bloodmnist": MedMnistSet(
        "7053d0359d879ad8a5505303e11de1dc",
        "multi-class",
        (
            "basophil",
            "eosinophil",
            "erythroblast",
            "immature granulocytes",
            "lymphocyte",
            "monocyte",
            "neutrophil",
            "platelet",
        ),
        "MedMNIST BloodMNIST: 17,092 blood cell microscopy images, RGB 28x28, 8 cell types",
    ),
    "pathmnist": MedMnistSet(
        "a8b06965200029087d5bd730944a56c1",
        "multi-class",
        (
            "adipose",
            "background",
            "debris",
            "lymphocytes",
            "mucus",
            "smooth muscle",
            "normal colon mucosa",
            "cancer-associated stroma",
            "colorectal adenocarcinoma epithelium",
        ),
        "MedMNIST PathMNIST: 107,180 colon pathology patches, RGB 28x28, 9 tissue types",
    ),
    "octmnist": MedMnistSet(
        "c68d92d5b585d8d81f7112f81e2d0842",
        "multi-class",
        ("choroidal neovascularization", "diabetic macular edema", "drusen", "normal"),
        "MedMNIST OCTMNIST: 109,309 retinal OCT scans, grey 28x28, 4 diagnoses",
    ),
    "chestmnist": MedMnistSet(
        "02c8a6516a18b556561a56cbdd36c4a8",
        "multi-label",
        (
            "atelectasis",
            "cardiomegaly",
            "effusion",
            "infiltration",
            "mass",
            "nodule",
            "pneumonia",
            "pneumothorax",
            "consolidation",
            "edema",
            "emphysema",
            "fibrosis",
            "pleural",
            "hernia",
        ),
        "MedMNIST ChestMNIST: 112,120 chest X-rays, grey 28x28, 14 findings (multi-label)",
    ),
}


def medmnist_name(path: Path) -> str | None:
    """The MedMNIST set a file is, by its name: pneumoniamnist.npz, or MedMNIST+'s sizes
    (pneumoniamnist_28.npz, _64, _128, _224)."""
    stem = re.sub(r"_\d+$", "", path.stem.lower())
    return stem if stem in MEDMNIST else None


def index_names(count: int) -> list[str]:
    """The class names of an npz whose file name says no MedMNIST set: its label values."""
    return [str(i) for i in range(count)]


def name_classes_by_index(splits: Any, classes: list[str]) -> str | None:
    """An npz named after no MedMNIST set (a held-out test file saved as heldout.npz) has
    labels 0..C-1 and no names: with the model's C classes they are the model's classes in
    order, a note says so (returned). Anything else is left as it is (None)."""
    found = len(splits.classes)  # the largest label + 1: a test file may lack the last class
    if splits.classes != index_names(found) or found > len(classes):
        return None
    parts = [p for p in (splits.train, splits.val, splits.test) if p is not None]
    if any(p.multilabel for p in parts) and found != len(classes):  # columns are classes
        return None
    if splits.classes == list(classes)[:found]:  # the model's classes are its label values
        return None
    for part in parts:
        part.classes = list(classes)
    splits.classes = list(classes)
    return (
        f"{splits.name} names no MedMNIST set: its labels 0-{found - 1} read as the model's "
        f"classes in order ({', '.join(classes)})"
    )


def named_medmnist_file(name: str, data_root: str | os.PathLike | None) -> Path:
    """<data root>/<name>.npz, downloaded (MD5-checked) when absent unless offline."""
    from cnnkit.data.named import default_data_root, offline

    info = MEDMNIST[name]
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    path = root / f"{name}.npz"
    if path.is_file():
        return path
    reason = "CNNKIT_OFFLINE=1"
    if not offline():
        try:
            _download(info.url(name), path, info.md5)
            return path
        except Exception as exc:  # URLError, timeout, bad MD5, unwritable folder, ...
            reason = " ".join(f"{type(exc).__name__}: {exc}".split())[:200]
    raise CnnkitError(
        f"{name} not found and could not be downloaded ({reason}): put {name}.npz (from "
        f"{info.url(name)}) in {root}{os.sep} and run again"
    )


def _download(url: str, path: Path, md5: str) -> None:
    from torchvision.datasets.utils import download_url

    from cnnkit.data.named import download_timeout

    with download_timeout():
        download_url(url, str(path.parent), path.name, md5)
    if not path.is_file():
        raise CnnkitError(f"the download of {url} failed its MD5 check")


class NpzFile:
    """One MedMNIST-style npz: which splits it holds, and each split as an ImageSet."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.arrays = np.load(path, allow_pickle=False)
            keys = set(self.arrays.files)
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
            raise CnnkitError(f"{path}: not a readable .npz file ({exc or 'empty'})") from None
        present = [s for s in ("train", "val", "test") if {f"{s}_images", f"{s}_labels"} <= keys]
        try:  # an empty split (0 images) is no split
            self.splits = [s for s in present if len(self.arrays[f"{s}_labels"]) > 0]
        except (OSError, ValueError, EOFError, TypeError, zipfile.BadZipFile) as exc:
            raise CnnkitError(f"{path}: not a readable .npz file ({exc})") from None
        if present and not self.splits:
            raise CnnkitError(f"{path} holds no labelled images (its splits are empty)")
        if not self.splits:
            raise CnnkitError(
                f"{path} holds no train_images/train_labels (nor val_ or test_) arrays: "
                "MedMNIST's layout is {split}_images (N, H, W[, 3]) and {split}_labels (N, 1)"
            )
        name = medmnist_name(path)
        self.info = MEDMNIST.get(name) if name else None
        self._labels = {s: self._read_labels(s) for s in self.splits}
        widths = {labels.shape[1] if labels.ndim == 2 else 0 for labels in self._labels.values()}
        if len(widths) > 1:
            raise CnnkitError(
                f"{path.name}: its splits' labels have different numbers of columns "
                f"({', '.join(map(str, sorted(widths)))})"
            )
        self.multilabel = widths != {0}
        self._check_task()
        self.classes = self._class_names()

    def _read_labels(self, split: str) -> np.ndarray:
        """Class indices (N,), or multi-hot 0/1 rows (N, C) when the labels have C > 1 columns."""
        labels = np.asarray(self.arrays[f"{split}_labels"])
        if labels.ndim == 2 and labels.shape[1] > 1:
            if not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool) or (
                labels.size and not np.isin(labels, (0, 1)).all()
            ):
                raise CnnkitError(
                    f"{self.path.name}: {split}_labels has {labels.shape[1]} columns, read as "
                    "multi-label; each must be 0 or 1"
                )
            return labels.astype(np.uint8)
        labels = labels.reshape(-1)
        if labels.dtype == bool:
            labels = labels.astype(np.int64)
        if labels.size and not np.issubdtype(labels.dtype, np.integer):
            raise CnnkitError(
                f"{self.path.name}: {split}_labels must be whole class numbers (an integer "
                f"array), not {labels.dtype}: save them with .astype(int)"
            )
        if labels.size and labels.min() < 0:
            raise CnnkitError(f"{self.path.name}: {split}_labels must be class indices >= 0")
        return labels.astype(np.int64)

    def _check_task(self) -> None:
        """A named MedMNIST set's file must hold its labels: ChestMNIST's 14 columns, one
        column for the others."""
        info = self.info
        if info is None:
            return
        columns = next(iter(self._labels.values())).shape
        columns = columns[1] if len(columns) == 2 else 1
        if info.task == "multi-label" and columns != len(info.classes):
            raise CnnkitError(
                f"{self.path.name}: its labels have {columns} column(s), but "
                f"{info.description.split(':')[0]} has {len(info.classes)} findings "
                f"({', '.join(info.classes[:3])}, ...), one 0/1 column each"
            )
        if info.task != "multi-label" and self.multilabel:
            raise CnnkitError(
                f"{self.path.name}: its labels have {columns} columns, but "
                f"{info.description.split(':')[0]} is {info.task} (one class index per image)"
            )

    def _class_names(self) -> list[str]:
        if self.info is not None:
            return list(self.info.classes)
        if self.multilabel:
            return index_names(next(iter(self._labels.values())).shape[1])
        top = max(
            (int(labels.max()) for labels in self._labels.values() if labels.size), default=-1
        )
        if top < 0:
            raise CnnkitError(f"{self.path.name} holds no labelled images")
        return index_names(top + 1)

    def labels(self, split: str) -> np.ndarray:
        """A split's class indices (N,), or its multi-hot rows (N, C)."""
        return self._labels[split]

    def split(self, name: str) -> ImageSet:
        images = np.asarray(self.arrays[f"{name}_images"])
        labels = self._labels[name]
        try:  # 16-bit and float arrays as the file decoder reads such pixels
            images = image_stack_to_uint8(images)
        except ImageDecodeError as exc:
            raise CnnkitError(f"{self.path.name}: {name}_images: {exc}") from None
        if images.ndim == 3:  # grey (N, H, W): the same plane in all three channels
            images = np.repeat(images[:, None], 3, axis=1)
        elif images.ndim == 4 and images.shape[-1] in (1, 3):
            images = np.repeat(images, 3, axis=-1) if images.shape[-1] == 1 else images
            images = images.transpose(0, 3, 1, 2)
        else:
            raise CnnkitError(
                f"{self.path.name}: {name}_images has shape {images.shape}; expected "
                "(N, H, W) grey or (N, H, W, 3) colour"
            )
        if len(images) != len(labels):
            raise CnnkitError(
                f"{self.path.name}: {len(images)} {name} images but {len(labels)} labels"
            )
        if not self.multilabel and labels.size and labels.max() >= len(self.classes):
            raise CnnkitError(
                f"{self.path.name}: {name}_labels has class {labels.max()}, but the set has "
                f"{len(self.classes)} classes"
            )
        return ImageSet(
            torch.from_numpy(np.ascontiguousarray(images)), torch.from_numpy(labels), self.classes
        )
