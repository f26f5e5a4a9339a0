"""Detector: a trained detector from its checkpoint: boxes for files, PIL images and arrays,
in the original image's pixels, and evaluation (mAP, per class, PR curves, a gallery)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
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
from cnnkit.tasks.detect.dataset import DetectionSet
from cnnkit.tasks.detect.formats import read_detection
from cnnkit.tasks.detect.inference import (
    configure_input,
    evaluation_thresholds,
    original_targets,
    predict_stored,
    scale_boxes,
    to_original,
)
from cnnkit.tasks.detect.models import detector_from_record, detector_spec
from cnnkit.tasks.detect.postprocess import PostProcess, apply_postprocess
from cnnkit.tasks.detect.report import DetectionReport, detection_report
from cnnkit.tasks.detect.tta import check_tta
from cnnkit.tasks.evaluation_data import (
    check_split,
    choose_split_and_say,
    classes_in_our_order,
    evaluation_folder,
    split_options,
    take_model_classes,
    trained_on,
)


@dataclass
class Box:
    """One detected object: class name, score, and x1 y1 x2 y2 in the original image's pixels."""

    label: str
    score: float
    box: list[float]

    def to_dict(self) -> dict[str, Any]:
        return {"label": self.label, "score": self.score, "box": self.box}


@dataclass
class Detections:
    """The objects found in one image, best first, and the image's size (width, height)."""

    source: str
    width: int
    height: int
    detections: list[Box] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "width": self.width,
            "height": self.height,
            "detections": [d.to_dict() for d in self.detections],
        }


def shrink_to(image: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (H, W, 3) -> (3, h, w) with the longer side at most `size` (as training stored)."""
    tensor = torch.from_numpy(np.require(image, requirements=["C", "W"])).permute(2, 0, 1)
    tensor = tensor.contiguous()
    height, width = tensor.shape[1:]
    scale = size / max(height, width)
    if scale >= 1:
        return tensor
    new = (max(1, round(height * scale)), max(1, round(width * scale)))
    resized = torch.nn.functional.interpolate(
        tensor[None].float(), size=new, mode="bilinear", antialias=True, align_corners=False
    )
    return resized[0].round().clamp(0, 255).to(torch.uint8)


class Detector:
    """A trained detector with its class names, input size and post-processing."""

    task = "detect"

    def __init__(
        self,
        model: torch.nn.Module,
        classes: list[str],
        preprocessing: Preprocessing,
        postprocess: PostProcess,
        device: str = "auto",
        precision: str = "auto",
        config: dict[str, Any] | None = None,
        path: Path | None = None,
        data_location: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = Precision(self.device, resolve_precision(precision, self.device))
        self.model = model.to(self.device).eval()
        self.classes = list(classes)
        self.preprocessing = preprocessing
        self.postprocess = postprocess
        self.stored_postprocess = postprocess  # the checkpoint's own
        self._settings_lock = threading.RLock()  # settings live on the model: one at a time
        self.config = config or {}
        self.path = path
        self.data_location = data_location
        self.size = int(preprocessing.size[0])
        self.mode = preprocessing.resize

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], path: Path, device: str = "auto", precision: str = "auto"
    ) -> Detector:
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
        postprocess = PostProcess.from_dict(ckpt.get("postprocess") or {})
        spec = detector_spec(ckpt["model"])
        model = detector_from_record(  # the same module, no weights fetched: they are ckpt's
            {
                "spec": spec.to_dict(),
                "num_classes": ckpt["num_classes"],
                "image_size": int(prep.size[0]),
                "postprocess": postprocess.to_dict(),
            }
        )
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise CnnkitError(f"{path}: weights do not fit detector '{spec.name}'") from None
        configure_input(model, int(prep.size[0]), prep.resize)
        config, where = ckpt.get("config", {}), ckpt.get("data_location")
        return cls(
            model, ckpt["classes"], prep, postprocess, device, precision, config, path, where
        )

    # ---- post-processing -----------------------------------------------------------------------
    def set_postprocess(
        self,
        conf: float | None = None,
        iou: float | None = None,
        max_detections: int | None = None,
        box_vote: float | None = None,
    ) -> PostProcess:
        """Change the default score threshold, NMS IoU, cap or box-voting IoU (0: off) for
        later predictions; returns the settings in force."""
        with self._settings_lock:
            self.postprocess = self.settings(conf, iou, max_detections, box_vote)
            apply_postprocess(self.model, self.postprocess)
            return self.postprocess

    def settings(
        self,
        conf: float | None,
        iou: float | None,
        max_detections: int | None = None,
        box_vote: float | None = None,
    ) -> PostProcess:
        """The default post-processing with the given values in place of its own."""
        values = self.postprocess.to_dict()
        given = {
            "score_threshold": conf,
            "iou_threshold": iou,
            "max_detections": max_detections,
            "box_vote": box_vote,
        }
        values.update({k: v for k, v in given.items() if v is not None})
        return PostProcess.from_dict(values)

    @contextmanager
    def using(
        self, conf: float | None, iou: float | None, box_vote: float | None = None
    ) -> Iterator[PostProcess]:
        """Within: the model post-processes with this --conf / --iou / --box-vote (the
        settings in force are yielded); after: the defaults again."""
        with self._settings_lock:  # threads' settings never mix on the shared model
            settings = self.settings(conf, iou, box_vote=box_vote)
            apply_postprocess(self.model, settings)
            try:
                yield settings
            finally:
                apply_postprocess(self.model, self.postprocess)

    # ---- prediction ----------------------------------------------------------------------------
    def predict(
        self,
        inputs: ImageInput | list[ImageInput],
        conf: float | None = None,
        iou: float | None = None,
        tta: str = "none",
        box_vote: float | None = None,
    ) -> Detections | list[Detections]:
        """Detect objects in one image (path, PIL image or HxWxC array) or a list of them;
        `conf`, `iou` and `box_vote` apply to this call (default: the checkpoint's settings);
        ``tta="flip"`` fuses the boxes found in the image and in its mirror image."""
        check_tta(tta)
        single = not isinstance(inputs, (list, tuple))
        items = [inputs] if single else list(inputs)
        arrays = decode_each(items)
        with self.using(conf, iou, box_vote):
            results = self._detect(arrays, [describe_input(i) for i in items], tta)
        return results[0] if single else results

    def predict_paths(
        self,
        patterns: list[str],
        conf: float | None = None,
        iou: float | None = None,
        batch_size: int = 16,
        tta: str = "none",
        box_vote: float | None = None,
    ) -> tuple[list[Detections], list[tuple[str, str]]]:
        """Detect in files, folders and globs; unreadable files come back as (path, reason)."""
        check_tta(tta)
        results: list[Detections] = []
        errors: list[tuple[str, str]] = []
        arrays, names = [], []
        with self.using(conf, iou, box_vote):
            for path in expand_paths(patterns):
                try:
                    arrays.append(decode_image(path))
                    names.append(str(path))
                except CnnkitError as exc:
                    errors.append((str(path), str(exc)))
                if len(arrays) == batch_size:
                    results += self._detect(arrays, names, tta)
                    arrays, names = [], []
            results += self._detect(arrays, names, tta)
        return results, errors

    def _detect(
        self, arrays: list[np.ndarray], names: list[str], tta: str = "none"
    ) -> list[Detections]:
        if not arrays:
            return []
        stored = [shrink_to(a, self.size) for a in arrays]
        found = predict_stored(self.model, stored, self.size, self.mode, self.precision, tta=tta)
        results = []
        for array, image, det, name in zip(arrays, stored, found, names, strict=True):
            height, width = array.shape[:2]
            sx, sy = width / image.shape[2], height / image.shape[1]
            boxes = scale_boxes(det["boxes"], sx, sy, height, width)
            items = [
                Box(self.classes[int(label)], float(score), corners)
                for box, score, label in zip(boxes, det["scores"], det["labels"], strict=True)
                # a box squeezed flat by clipping to a thin image has no area: no detection
                if (corners := [round(float(v), 2) for v in box])[2] > corners[0]
                and corners[3] > corners[1]
            ]
            results.append(Detections(name, width, height, items))
        return results

    def save_images(self, results: list[Detections], out_dir: str | os.PathLike) -> list[Path]:
        """Draw each result's boxes on its image file, written to out_dir (PNG)."""
        from cnnkit.tasks.detect.draw import draw_detections

        out = output_folder(out_dir, "images")
        written = []
        for i, result in enumerate(results):
            if not Path(result.source).is_file():
                continue
            image = decode_image(result.source)
            name = f"{i:04d}-{Path(result.source).stem}.png"
            written.append(draw_detections(image, result.detections, out / name))
        return written

    # ---- evaluation ----------------------------------------------------------------------------
    def _trained_on(self, data: str | os.PathLike) -> bool:
        return trained_on(data, self.data_location, self.config)

    def split_images(
        self, data: str | os.PathLike, split: str = "test", progress: bool = True
    ) -> tuple[DetectionSet, str]:
        """The images of `split`: on the run's own data its splits (the seeded validation split
        stands in for a missing test split); other data without splits is all test, and data
        with train / val splits but no test split is refused."""
        return self._read_split(data, split, progress)[:2]

    def _read_split(
        self, data: str | os.PathLike, split: str, progress: bool
    ) -> tuple[DetectionSet, str, list[tuple[str, str]]]:
        """split_images, and the files the reader skipped (named on stderr here)."""
        check_split(split)
        own = self._trained_on(data)
        splits = read_detection(
            data,
            max_size=self.size,
            **split_options(self.config, own),
            progress=progress,
        )
        if splits.format == "masks" and len(self.classes) == len(splits.classes) == 1:
            _one_class_as_ours(splits, self.classes[0])
        return choose_split_and_say(splits, split, own, data)

    def evaluate(
        self,
        data: str | os.PathLike | DetectionSet,
        split: str = "test",
        out_dir: str | os.PathLike | None = None,
        progress: bool = True,
        batch_size: int = 8,
        tta: str = "none",
        data_root: str | None = None,
    ) -> DetectionReport:
        """COCO-style mAP@[.5:.95], mAP@.5, mAP@.75, recall and per-class AP; reports are
        written to `out_dir` (default: beside the checkpoint). `data_root` is for named
        classification datasets and means nothing here."""
        check_tta(tta)
        if out_dir is not None:  # before the work, as for predict's folders
            output_folder(out_dir, "evaluation reports")
        skipped: list[tuple[str, str]] = []
        if isinstance(data, DetectionSet):
            images = data
        else:
            images, split, skipped = self._read_split(data, split, progress)
        labels = classes_in_our_order(images.classes, self.classes)
        with evaluation_thresholds(self.model, self.postprocess):
            found = predict_stored(
                self.model, images.images, self.size, self.mode, self.precision, batch_size, tta
            )
        targets = original_targets(images)
        for target in targets:
            target.labels = labels[target.labels]
        conf = self.postprocess.score_threshold  # the gallery shows what predict would
        report = detection_report(
            to_original(found, images), targets, self.classes, images, conf, tta
        )
        report.skipped = skipped
        if not isinstance(data, DetectionSet):
            report.data = data_location(data)
        pp, stored = self.postprocess, self.stored_postprocess
        report.postprocess = {"iou_threshold": pp.iou_threshold, "box_vote": pp.box_vote}
        if out_dir is None and self.path is not None and not isinstance(data, DetectionSet):
            same = (pp.iou_threshold, pp.box_vote) == (stored.iou_threshold, stored.box_vote)
            variant = "" if same else f"-iou{pp.iou_threshold:g}-vote{pp.box_vote:g}"
            out_dir = evaluation_folder(self.path, data, split, tta, variant)
        if out_dir is not None:
            report.write(Path(out_dir))
        return report


def _one_class_as_ours(splits: Any, name: str) -> None:
    """Instance masks have one class, named by the layout (person, object) or a classes.txt:
    with a one-class model it is the model's class, whatever the held-out folder calls it."""
    if splits.classes != [name]:
        note = f"its objects ('{splits.classes[0]}') read as the model's '{name}'"
        take_model_classes(splits, [name], note)
