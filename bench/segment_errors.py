"""Where a person segmenter's errors lie on Penn-Fudan test photos, and whether refining its
probabilities after the network helps: another threshold than 0.5, or a guided filter (He et
al., the photo's grey levels as the guide) over the person probability.

    python bench/segment_errors.py RUN_OR_BEST_PT DATA_FOLDER [--size 576] [--show NAMES]

DATA_FOLDER holds PNGImages/ and PedMasks/ (a test part written by bench/segment_pennfudan.py
with --keep, or any Penn-Fudan-layout folder). The probabilities are the predictor's own pass
(letterbox, the model, the window resized bilinearly to the photo), so "plain" equals cnnkit
evaluate's person IoU. IoU is over all test pixels at once, as the metrics compute it.
--show writes overlays (right: green, false person: red, missed: blue) for the named photos.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

import cnnkit
from cnnkit.tasks.segment.batch import letterbox_batch


def person_probabilities(run: str, photos: list[Path], size: int) -> list[np.ndarray]:
    seg = cnnkit.load(run, device="cpu")
    out = []
    with torch.no_grad():
        for path in photos:
            image = torch.from_numpy(np.asarray(Image.open(path).convert("RGB")).copy())
            batch, windows = letterbox_batch([image.permute(2, 0, 1)], size)
            with seg.precision.autocast():
                scores = seg.model.eval()(batch).float().softmax(1)[0]
            w = windows[0]
            inner = scores[:, w.top : w.top + w.inner_height, w.left : w.left + w.inner_width]
            full = F.interpolate(inner[None], (w.height, w.width), mode="bilinear")[0]
            out.append(full[1].numpy())
    return out


def guided_filter(guide: np.ndarray, p: np.ndarray, radius: int, eps: float) -> np.ndarray:
    guide, p = guide.astype(np.float32) / 255, p.astype(np.float32)

    def box(x: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(x, -1, (2 * radius + 1, 2 * radius + 1))

    mean_i, mean_p = box(guide), box(p)
    a = (box(guide * p) - mean_i * mean_p) / (box(guide * guide) - mean_i * mean_i + eps)
    b = mean_p - a * mean_i
    return box(a) * guide + box(b)


def ious(preds: list[np.ndarray], truths: list[np.ndarray]) -> tuple[float, float]:
    """(person IoU, mIoU over background and person) over all pixels at once."""
    inter = sum(int((p & t).sum()) for p, t in zip(preds, truths, strict=True))
    union = sum(int((p | t).sum()) for p, t in zip(preds, truths, strict=True))
    back_inter = sum(int((~p & ~t).sum()) for p, t in zip(preds, truths, strict=True))
    back_union = sum(int((~p | ~t).sum()) for p, t in zip(preds, truths, strict=True))
    person = inter / union
    return person, (person + back_inter / back_union) / 2


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run")
    parser.add_argument("data", type=Path)
    parser.add_argument("--size", type=int, default=576)
    parser.add_argument("--show", default="", help="photo names to draw, comma-separated")
    args = parser.parse_args()
    photos = sorted((args.data / "PNGImages").glob("*.png"))
    truths = [
        np.asarray(Image.open(args.data / "PedMasks" / f"{p.stem}_mask.png")) > 0 for p in photos
    ]
    probs = person_probabilities(args.run, photos, args.size)
    plain = ious([p > 0.5 for p in probs], truths)
    print(f"plain (0.5): person IoU {plain[0]:.4f}, mIoU {plain[1]:.4f}")
    for threshold in (0.4, 0.45, 0.55, 0.6):
        found = ious([p > threshold for p in probs], truths)
        print(f"threshold {threshold}: person IoU %.4f, mIoU %.4f" % found)
    greys = [
        cv2.cvtColor(np.asarray(Image.open(p).convert("RGB")), cv2.COLOR_RGB2GRAY) for p in photos
    ]
    for radius in (2, 4, 8, 16):
        for eps in (1e-3, 1e-2, 1e-1):
            refined = [
                guided_filter(g, p, radius, eps) > 0.5 for g, p in zip(greys, probs, strict=True)
            ]
            print(
                f"guided r {radius} eps {eps}: person IoU %.4f, mIoU %.4f" % ious(refined, truths)
            )

    rows, total = [], 0
    far = 0  # false person pixels in blobs at least 2 px from every annotated person
    for path, prob, truth in zip(photos, probs, truths, strict=True):
        pred = prob > 0.5
        fp, fn = int((pred & ~truth).sum()), int((~pred & truth).sum())
        rows.append(
            (fp + fn, path.stem, fp, fn, (pred & truth).sum() / max((pred | truth).sum(), 1))
        )
        total += fp + fn
        count, labels = cv2.connectedComponents((pred & ~truth).astype(np.uint8))
        near = cv2.dilate(truth.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0
        far += sum(
            int((labels == k).sum()) for k in range(1, count) if not (near & (labels == k)).any()
        )
    print(
        f"share of wrong pixels in false blobs away from every annotated person: {far / total:.3f}"
    )
    print("photos with the most wrong pixels: name, false person, missed, IoU, share of all errors")
    for wrong, name, fp, fn, iou in sorted(rows, reverse=True)[:10]:
        print(f"  {name} {fp} {fn} {iou:.3f} {wrong / total:.3f}")
    for path, prob, truth in zip(photos, probs, truths, strict=True):
        if path.stem in args.show.split(","):
            pred, overlay = prob > 0.5, np.asarray(Image.open(path).convert("RGB")).astype(float)
            for where, colour, keep in (
                (pred & ~truth, (255, 0, 0), 0.4),
                (~pred & truth, (0, 0, 255), 0.4),
                (pred & truth, (0, 255, 0), 0.7),
            ):
                overlay[where] = overlay[where] * keep + np.array(colour) * (1 - keep)
            Image.fromarray(overlay.astype(np.uint8)).save(f"{path.stem}_errors.png")


if __name__ == "__main__":
    main()
