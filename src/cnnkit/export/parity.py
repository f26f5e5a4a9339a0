"""Does the exported file answer as the checkpoint does? Measured on real images.

Two levels, both on the same images: the graph's raw outputs against the eager module's (the
relative error: largest absolute difference over the largest reference magnitude), and the
task's answers through the two predictors (classify: top-1 and top-5 agreement; detect: the
share of the checkpoint's boxes the export finds with the same class and corners, and the
largest score difference; segment: the share of pixels given the same class).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data import IMAGE_EXTENSIONS, decode_image
from cnnkit.errors import CnnkitError
from cnnkit.inputs import expand_paths

PARITY_IMAGES = 16
MAX_RELATIVE_ERROR = 1e-3
MIN_AGREEMENT = 0.99  # top-1, matched boxes
MIN_PIXEL_AGREEMENT = 0.999
MAX_SCORE_DIFFERENCE = 1e-3
MIN_COSINE = 0.9999  # an exported embedding against the checkpoint's
BOX_TOLERANCE = 1e-4  # of the image's longer side, for box corners
SAMPLES = Path(__file__).resolve().parent.parent / "data" / "samples"


@dataclass(frozen=True)
class Limits:
    """What an export must reach to be kept."""

    relative_error: float | None = MAX_RELATIVE_ERROR  # None: reported, not required
    agreement: float = MIN_AGREEMENT
    pixel_agreement: float = MIN_PIXEL_AGREEMENT
    cosine: float = MIN_COSINE


FLOAT_LIMITS = Limits()
# an int8 graph's raw outputs differ by design; its answers must still agree. Recorded
# (docs/benchmarks.md): 96.9% top-1 agreement for an EfficientNet-Lite0 fine-tuned on
# cifar10-sample (test accuracy 72.4% fp32, 72.6% int8). The segmenters' and embeddings' limits
# are not backed by a recorded run yet (one-off checks: a 2-epoch Penn-Fudan LR-ASPP agreed on
# 99.0% of pixels, a small face model's lowest cosine was 0.974 and it was refused)
INT8_LIMITS = Limits(relative_error=None, agreement=0.95, pixel_agreement=0.98, cosine=0.98)


def _files_under(root: Path) -> list[Path]:
    """Image files under a folder, masks left out (they are images too, but not photos)."""
    if not root.is_dir():
        return []
    return sorted(
        p
        for p in root.rglob("*")
        if p.suffix.lower() in IMAGE_EXTENSIONS
        and not any("mask" in part.lower() for part in p.relative_to(root).parts)
        and p.is_file()
    )


def _spread(items: list, count: int) -> list:
    if len(items) <= count:
        return items
    step = len(items) / count
    return [items[int(i * step)] for i in range(count)]


def _decoded(files: list[Path], say_skipped: bool = False) -> list[np.ndarray]:
    """The files' pixels; an unreadable one is left out (and named on stderr if asked: the
    user's own --images, not files cnnkit picked)."""
    arrays = []
    for path in files:
        try:
            arrays.append(decode_image(path))
        except CnnkitError as exc:
            if say_skipped:
                print(f"cnnkit: skipped {path}: {exc}", file=sys.stderr)
    return arrays


def _run_data(predictor: Any, count: int) -> list[np.ndarray]:
    """Images of the data the run trained on: its folder's files, or a named dataset's test
    split; none when it is not on this machine."""
    from cnnkit.data.datasets import SAMPLE_NAME, named_dataset, sample_path

    location = predictor.data_location or predictor.config.get("data")
    if not location:
        return []
    name = named_dataset(location)
    if name == SAMPLE_NAME:
        return _decoded(_spread(_files_under(sample_path() / "test"), count))
    if name is not None:
        from cnnkit.data.named import load_named

        try:
            images = load_named(name, "test", predictor.config.get("data_root")).images
        except CnnkitError:
            return []
        chosen = _spread(list(range(len(images))), count)
        return [images[i].permute(1, 2, 0).contiguous().numpy() for i in chosen]
    root = Path(location)
    return _decoded(_spread(_files_under(root if root.is_dir() else root.parent), count))


def parity_images(
    predictor: Any, images: list[str] | None = None, count: int = PARITY_IMAGES
) -> tuple[list[np.ndarray], str]:
    """Up to ``count`` decoded images, evenly spread: those given, else the run's own data,
    else the images cnnkit ships; and where they came from."""
    if images:
        arrays, where = _decoded(_spread(expand_paths(images), count), True), "the images given"
    else:
        arrays, where = _run_data(predictor, count), "the run's data"
        if not arrays:
            arrays = _decoded(_spread(_files_under(SAMPLES), count))
            where = "cnnkit's sample images"
    if not arrays:
        if images:
            raise CnnkitError("none of the --images could be read: nothing to check the export on")
        raise CnnkitError(f"no readable image for the parity check in {where}: give --images")
    if images and len(arrays) < min(count, 4):
        print(
            f"cnnkit: the check runs on only {len(arrays)} image(s) (it takes up to {count}):"
            " give more --images for a firmer one",
            file=sys.stderr,
        )
    return arrays, where


def _relative_error(reference: torch.Tensor, exported: torch.Tensor) -> float:
    scale = reference.abs().max().clamp_min(1e-12)
    return float((reference.float() - exported.float()).abs().max() / scale)


def graph_input(predictor: Any, arrays: list[np.ndarray], pixels: bool) -> torch.Tensor:
    """The batch the graph takes for these images, as the predictor prepares it."""
    if predictor.task == "classify":
        batch = torch.from_numpy(np.stack([predictor.decode(a) for a in arrays]))
        batch = batch.permute(0, 3, 1, 2).contiguous()
        if pixels:
            return batch
        return predictor.preprocessing.to_input(batch)
    if predictor.task == "embed":
        batch = torch.from_numpy(np.stack(predictor.decoded(arrays))).permute(0, 3, 1, 2)
        return batch.contiguous() if pixels else predictor.preprocessing.to_input(batch)
    from cnnkit.tasks.segment.batch import letterbox_batch

    tensors = [torch.from_numpy(np.array(a)).permute(2, 0, 1) for a in arrays]
    return letterbox_batch(tensors, int(predictor.preprocessing.size[0]))[0]


@torch.no_grad()
def raw_error(module: torch.nn.Module, runner: torch.nn.Module, batch: torch.Tensor) -> float:
    """The largest relative error over the graph's outputs, a few images at a time."""
    worst = 0.0
    for start in range(0, len(batch), 4):
        part = batch[start : start + 4]
        ours = module(part)
        theirs = runner(part)
        ours = ours if isinstance(ours, tuple) else (ours,)
        theirs = theirs if isinstance(theirs, tuple) else (theirs,)
        for a, b in zip(ours, theirs, strict=True):
            worst = max(worst, _relative_error(a, b))
    return worst


def _classify(
    reference: Any, exported: Any, arrays: list[np.ndarray], limits: Limits
) -> dict[str, Any]:
    images = torch.from_numpy(np.stack([reference.decode(a) for a in arrays]))
    images = images.permute(0, 3, 1, 2).contiguous()
    a = reference.logits(images, batch_size=8)[0]
    b = exported.logits(images, batch_size=8)[0]
    k = min(5, a.shape[1])
    top_a, top_b = a.topk(k, 1).indices.sort(1).values, b.topk(k, 1).indices.sort(1).values
    top1 = float((a.argmax(1) == b.argmax(1)).float().mean())
    top5 = float((top_a == top_b).all(1).float().mean())
    passed = top1 >= limits.agreement
    return {"top1_agreement": top1, f"top{k}_agreement": top5, "task_passed": passed}


def _detect(
    reference: Any, exported: Any, arrays: list[np.ndarray], limits: Limits
) -> dict[str, Any]:
    """Each of the checkpoint's boxes must come back: same class, corners within
    ``BOX_TOLERANCE`` of the image's longer side (not IoU: an untrained model's boxes can have
    no area), and of those candidates the closest score."""
    conf = 0.05  # compared at a low threshold: many boxes, most of them uncertain
    ours = reference.predict(list(arrays), conf=conf)
    theirs = exported.predict(list(arrays), conf=conf)
    total = matched = extra = 0
    worst = 0.0
    for a, b in zip(ours, theirs, strict=True):
        total += len(a.detections)
        if not a.detections or not b.detections:
            extra += len(b.detections)
            continue
        tolerance = BOX_TOLERANCE * max(a.width, a.height) + 0.01
        corners = torch.cdist(
            torch.tensor([d.box for d in a.detections]),
            torch.tensor([d.box for d in b.detections]),
            p=float("inf"),
        )
        used: set[int] = set()
        for i, det in enumerate(a.detections):
            candidates = [
                j
                for j in torch.nonzero(corners[i] <= tolerance).flatten().tolist()
                if j not in used and b.detections[j].label == det.label
            ]
            if candidates:
                j = min(candidates, key=lambda c: abs(det.score - b.detections[c].score))
                used.add(j)
                matched += 1
                worst = max(worst, abs(det.score - b.detections[j].score))
        extra += len(b.detections) - len(used)
    share = matched / total if total else 1.0
    unmatched_share = extra / max(total, 1)
    passed = share >= limits.agreement and unmatched_share <= 1 - limits.agreement
    passed = passed and worst <= MAX_SCORE_DIFFERENCE
    return {
        "boxes": total,
        "matched_boxes": share,
        "unmatched_exported_boxes": extra,
        "max_score_difference": worst,
        "score_threshold": conf,
        "task_passed": passed,
    }


def _segment(
    reference: Any, exported: Any, arrays: list[np.ndarray], limits: Limits
) -> dict[str, Any]:
    ours = reference.predict(list(arrays))
    theirs = exported.predict(list(arrays))
    same = sum(int((a.mask == b.mask).sum()) for a, b in zip(ours, theirs, strict=True))
    pixels = sum(a.mask.size for a in ours)
    agreement = same / pixels
    return {"pixel_agreement": agreement, "task_passed": agreement >= limits.pixel_agreement}


def _embed(
    reference: Any, exported: Any, arrays: list[np.ndarray], limits: Limits
) -> dict[str, Any]:
    """The embeddings' agreement: the lowest cosine similarity between the checkpoint's and
    the file's embedding of one image (the images as they are: no face search)."""
    ours = reference.embed_arrays(reference.decoded(arrays))
    theirs = exported.embed_arrays(exported.decoded(arrays))
    cosines = np.sum(ours * theirs, axis=1)
    lowest = float(np.min(cosines))
    return {
        "min_cosine": lowest,
        "mean_cosine": float(np.mean(cosines)),
        "task_passed": lowest >= limits.cosine,
    }


def check_parity(
    reference: Any,
    exported: Any,
    module: torch.nn.Module,
    arrays: list[np.ndarray],
    pixels: bool,
    limits: Limits = FLOAT_LIMITS,
) -> dict[str, Any]:
    """Parity of ``exported`` (the predictor around the file) with ``reference`` (the
    checkpoint's, in fp32 on the CPU) and of its graph with ``module``, on ``arrays``."""
    batch = graph_input(reference, arrays, pixels)
    runner = exported.model.graph if reference.task == "detect" else exported.model
    error = raw_error(module, runner, batch)
    checks = {"classify": _classify, "detect": _detect, "segment": _segment, "embed": _embed}
    task = checks[reference.task]
    result = task(reference, exported, arrays, limits)
    result = {"images": len(arrays), "relative_error": error, **result}
    close = limits.relative_error is None or error <= limits.relative_error
    result["passed"] = bool(result.pop("task_passed") and close)
    return result


def summary(result: dict[str, Any]) -> str:
    """The figures of a parity result in one line."""
    parts = [f"relative error {result['relative_error']:.2e}"]
    for key, value in result.items():
        if key.endswith("agreement") or key == "matched_boxes":
            parts.append(f"{key.replace('_', ' ')} {value:.1%}")
    if "min_cosine" in result:
        parts.append(f"lowest cosine {result['min_cosine']:.6f}")
    if "max_score_difference" in result:
        parts.append(f"max score difference {result['max_score_difference']:.1e}")
    return f"{', '.join(parts)} on {result['images']} images"
