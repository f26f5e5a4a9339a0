"""Segmenter: a trained segmenter from its checkpoint: a class mask for files, PIL images and
arrays at the image's own size, saved masks and overlays, and evaluation (mIoU, per-class IoU,
Dice, pixel accuracy, the confusion matrix, a gallery)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data import decode_image
from cnnkit.data.datasets import data_location
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision, resolve_device, resolve_precision
from cnnkit.errors import CnnkitError
from cnnkit.inputs import ImageInput, decode_each, describe_input, expand_paths, output_folder
from cnnkit.tasks.evaluation_data import (
    check_split,
    choose_split_and_say,
    classes_in_our_order,
    evaluation_folder,
    split_options,
    take_model_classes,
    trained_on,
)
from cnnkit.tasks.segment.dataset import IGNORE_INDEX, SegmentationSet
from cnnkit.tasks.segment.formats import read_segmentation, segmentation_format
from cnnkit.tasks.segment.formats.pairs import ManyClassNames, NoClassNames
from cnnkit.tasks.segment.inference import check_tta, predict_classes
from cnnkit.tasks.segment.metrics import segmentation_metrics
from cnnkit.tasks.segment.models import segmenter_from_record, segmenter_spec
from cnnkit.tasks.segment.report import GALLERY_IMAGES, SegmentationReport

BATCH = 4  # images per forward pass in prediction


@dataclass
class SegmentationResult:
    """One image's predicted class mask (H, W) at its own size, and the class names."""

    source: str
    width: int
    height: int
    mask: np.ndarray  # int64 (height, width): class index of every pixel
    classes: list[str]
    files: dict[str, str] = field(default_factory=dict)  # "mask" / "overlay" when saved

    @property
    def shares(self) -> dict[str, float]:
        """Each class's share of the image's pixels."""
        counts = np.bincount(self.mask.reshape(-1), minlength=len(self.classes))
        total = max(int(counts.sum()), 1)
        return {name: float(counts[i]) / total for i, name in enumerate(self.classes)}

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        """``np.asarray(result)`` is the mask."""
        return self.mask if dtype is None else self.mask.astype(dtype)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.mask.shape

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "shares": self.shares,
            **self.files,
        }


def _tensor(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)


class Segmenter:
    """A trained segmenter with its class names and input size."""

    task = "segment"

    def __init__(
        self,
        model: torch.nn.Module,
        classes: list[str],
        preprocessing: Preprocessing,
        device: str = "auto",
        precision: str = "auto",
        config: dict[str, Any] | None = None,
        path: Path | None = None,
        data_location: str | None = None,
        instances: str = "auto",
    ) -> None:
        self.device = resolve_device(device)
        self.precision = Precision(self.device, resolve_precision(precision, self.device))
        self.model = model.to(self.device).eval()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.config = config or {}
        self.path = path
        self.data_location = data_location
        self.instances = instances
        self.size = int(preprocessing.size[0])

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], path: Path, device: str = "auto", precision: str = "auto"
    ) -> Segmenter:
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
        spec = segmenter_spec(ckpt["model"])
        model = segmenter_from_record(  # the same module, no weights fetched: they are ckpt's
            {"spec": spec.to_dict(), "num_classes": ckpt["num_classes"], "image_size": prep.size[0]}
        )
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise CnnkitError(f"{path}: weights do not fit segmenter '{spec.name}'") from None
        config, where = ckpt.get("config", {}), ckpt.get("data_location")
        instances = str(ckpt.get("instances") or "auto")
        return cls(model, ckpt["classes"], prep, device, precision, config, path, where, instances)

    # ---- prediction ----------------------------------------------------------------------------
    def predict(
        self, inputs: ImageInput | list[ImageInput], tta: str = "none"
    ) -> SegmentationResult | list[SegmentationResult]:
        """The class mask of one image (path, PIL image or HxWxC array) or of a list of them,
        at each image's own size: a SegmentationResult whose ``.mask`` (also
        ``np.asarray(result)``) is the (H, W) class index of every pixel, with ``.shares``;
        ``tta="flip"`` averages it with the mirror image's."""
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        arrays = decode_each(items)
        results = self._segment(arrays, [describe_input(i) for i in items], tta)
        return results[0] if single else results

    def predict_paths(
        self,
        patterns: list[str],
        tta: str = "none",
        save_masks: str | os.PathLike | None = None,
        batch_size: int = BATCH,
    ) -> tuple[list[SegmentationResult], list[tuple[str, str]]]:
        """Segment files, folders and globs; unreadable files come back as (path, reason).
        With ``save_masks`` each image's class-index PNG (``NNNN-name.png``, at its own size)
        and colour overlay (``NNNN-name_overlay.png``) are written there as they are made."""
        check_tta(tta)
        paths = expand_paths(patterns)  # before the folder is made: bad inputs leave none
        out = output_folder(save_masks, "masks") if save_masks is not None else None
        results: list[SegmentationResult] = []
        errors: list[tuple[str, str]] = []
        arrays, names = [], []

        def flush() -> None:
            found = self._segment(arrays, names, tta)
            if out is not None:
                for array, result in zip(arrays, found, strict=True):
                    self._save(result, array, out, len(results))
                    results.append(result)
            else:
                results.extend(found)
            arrays.clear()
            names.clear()

        for path in paths:
            try:
                arrays.append(decode_image(path))
                names.append(str(path))
            except CnnkitError as exc:
                errors.append((str(path), str(exc)))
            if len(arrays) == batch_size:
                flush()
        flush()
        return results, errors

    def _segment(
        self, arrays: list[np.ndarray], names: list[str], tta: str
    ) -> list[SegmentationResult]:
        if not arrays:
            return []
        images = [_tensor(a) for a in arrays]
        found = predict_classes(self.model, images, self.size, self.precision, BATCH, tta)
        return [
            SegmentationResult(name, a.shape[1], a.shape[0], mask.numpy(), self.classes)
            for a, mask, name in zip(arrays, found, names, strict=True)
        ]

    def _save(self, result: SegmentationResult, image: np.ndarray, out: Path, i: int) -> None:
        from cnnkit.tasks.detect.draw import save_png
        from cnnkit.tasks.segment.draw import overlay, save_class_png

        stem = f"{i:04d}-{Path(result.source).stem or 'image'}"
        n = len(self.classes)
        mask_path = save_class_png(result.mask, out / f"{stem}.png", n)
        drawn = overlay(_tensor(image), torch.from_numpy(result.mask), n)
        overlay_path = save_png(drawn, out / f"{stem}_overlay.png")
        result.files = {"mask": str(mask_path), "overlay": str(overlay_path)}

    def save_masks(
        self, results: list[SegmentationResult], out_dir: str | os.PathLike
    ) -> list[Path]:
        """Write each result's class-index PNG, and its overlay where the source is a file."""
        from cnnkit.tasks.segment.draw import save_class_png

        out = output_folder(out_dir, "masks")
        written = []
        for i, result in enumerate(results):
            if Path(result.source).is_file():
                self._save(result, decode_image(result.source), out, i)
                written.append(Path(result.files["mask"]))
            else:
                stem = f"{i:04d}-image"
                written.append(save_class_png(result.mask, out / f"{stem}.png", len(self.classes)))
        return written

    # ---- evaluation ----------------------------------------------------------------------------
    def split_images(
        self, data: str | os.PathLike, split: str = "test", progress: bool = True
    ) -> tuple[SegmentationSet, str]:
        """The images of `split`: on the run's own data its splits (the seeded validation split
        stands in for a missing test split); other data without splits is all test, and data
        with train / val splits but no test split is refused."""
        return self._read_split(data, split, progress)[:2]

    def _read_split(
        self, data: str | os.PathLike, split: str, progress: bool
    ) -> tuple[SegmentationSet, str, list[tuple[str, str]]]:
        """split_images, and the files the reader skipped (named on stderr here)."""
        check_split(split)
        own = trained_on(data, self.data_location, self.config)
        instances = self.instances  # as its training masks were read
        if instances == "foreground" and segmentation_format(data) != "masks":
            instances = "auto"  # VOC / COCO class masks: their own names
        options = dict(**split_options(self.config, own), progress=progress)
        try:
            splits = read_segmentation(data, instances=instances, **options)
        except ManyClassNames:  # class masks of many classes: read so, and compared with ours
            splits = read_segmentation(data, instances="auto", **options)
        except NoClassNames:
            # masks without names, and a checkpoint from before it said how its masks were
            # read: a background / one-class model takes them as instance masks
            if self.classes[0] != "background" or len(self.classes) != 2:
                raise
            splits = read_segmentation(data, instances="foreground", **options)
        if splits.instances == "foreground" and self.classes[0] == "background":
            _foreground_as_ours(splits, self.classes)
        return choose_split_and_say(splits, split, own, data)

    def evaluate(
        self,
        data: str | os.PathLike | SegmentationSet,
        split: str = "test",
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        batch_size: int = 4,
        tta: str = "none",
        data_root: str | None = None,
    ) -> SegmentationReport:
        """mIoU, per-class IoU and Dice, pixel accuracy and the confusion matrix, at each
        image's own size; reports are written to `out_dir` (default: beside the checkpoint).
        `data_root` is for named classification datasets and means nothing here."""
        check_tta(tta)
        if out_dir is not None:  # before the work, as for predict's folders
            output_folder(out_dir, "evaluation reports")
        skipped: list[tuple[str, str]] = []
        if isinstance(data, SegmentationSet):
            images = data
        else:
            images, split, skipped = self._read_split(data, split, progress)
        ours = classes_in_our_order(images.classes, self.classes)
        masks = [_remap(mask, ours) for mask in images.masks]
        found = predict_classes(
            self.model, images.images, self.size, self.precision, batch_size, tta
        )
        kept: list[torch.Tensor] = []

        def predictions():
            for predicted in found:
                if len(kept) < GALLERY_IMAGES:
                    kept.append(predicted)
                yield predicted

        metrics = segmentation_metrics(predictions(), masks, self.classes)
        shown = len(kept)
        report = SegmentationReport(
            metrics, len(images), tta, None, (images.images[:shown], masks[:shown], kept)
        )
        report.skipped = skipped
        if not isinstance(data, SegmentationSet):
            report.data = data_location(data)
        if out_dir is None and self.path is not None and not isinstance(data, SegmentationSet):
            out_dir = evaluation_folder(self.path, data, split, tta)
        if out_dir is not None:
            report.write(Path(out_dir))
        return report


def _foreground_as_ours(splits: Any, classes: list[str]) -> None:
    """Instance masks read as background / one class (named by the layout's default or a
    classes.txt) are the model's two classes, whatever the held-out folder calls the object."""
    if list(splits.classes) == list(classes) or len(classes) != 2:
        return
    note = (
        f"instance masks read as the model's '{classes[0]}' / '{classes[1]}' "
        f"(the data names them '{splits.classes[0]}' / '{splits.classes[1]}')"
    )
    take_model_classes(splits, classes, note)


def _remap(mask: torch.Tensor, ours: torch.Tensor) -> torch.Tensor:
    """A mask's class indices in the data's order -> the model's; ignore stays ignore."""
    table = torch.full((IGNORE_INDEX + 1,), IGNORE_INDEX, dtype=torch.int64)
    table[: len(ours)] = ours
    return table[mask.long()]
