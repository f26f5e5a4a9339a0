"""Where a pedestrian detector's boxes miss on Penn-Fudan test photos, and whether another NMS
IoU threshold or box voting helps its mAP.

    python bench/detect_errors.py RUN_OR_BEST_PT DATA_FOLDER [--iou 0.4 0.5 0.6 0.7]
        [--vote 0 0.7]

DATA_FOLDER holds PNGImages/ and PedMasks/ (a test part written by bench/detect_pennfudan.py
with --keep, or any Penn-Fudan-layout folder). Each NMS IoU (with each box-voting IoU, 0: off)
is scored with the predictor's own evaluate (so the checkpoint's own settings give
`cnnkit evaluate`'s mAP). Then every true box is matched
to the prediction that overlaps it most (IoU >= 0.5, predict's default score threshold), and
each edge's offset is given as a share of the true box's width (left, right) or height (top,
bottom): a mean far from 0 is a bias, a large mean |offset| is scatter.
"""

from __future__ import annotations

import argparse
import tempfile

import torch
from torchvision.ops import box_iou

import cnnkit
from cnnkit.tasks.detect.formats import read_detection


def nms_sweep(detector, data: str, thresholds: list[float], votes: list[float]) -> None:
    default = detector.postprocess
    for iou in thresholds:
        for vote in votes:
            detector.set_postprocess(iou=iou, box_vote=vote)
            with tempfile.TemporaryDirectory() as tmp:
                r = detector.evaluate(data, out_dir=tmp, progress=False)
            print(
                f"NMS IoU {iou:g}, box vote {vote:g}: mAP {r.map:.4f}  mAP@.5 {r.map_50:.4f}  "
                f"mAP@.75 {r.map_75:.4f}",
                flush=True,
            )
    detector.set_postprocess(iou=default.iou_threshold, box_vote=default.box_vote)


def edge_offsets(detector, data: str) -> None:
    test = read_detection(data, val_split=0.0).train
    rows = []
    for path, target in zip(test.paths, test.targets, strict=True):
        found = detector.predict(path).detections
        if not found or len(target.boxes) == 0:
            continue
        truth = target.boxes.float()
        boxes = torch.tensor([d.box for d in found], dtype=torch.float32)
        overlap = box_iou(truth, boxes)
        for t in range(len(truth)):
            j = int(overlap[t].argmax())
            if float(overlap[t, j]) < 0.5:
                continue
            (x1, y1, x2, y2), p = truth[t].tolist(), boxes[j]
            w, h = x2 - x1, y2 - y1
            offsets = [(p[0] - x1) / w, (p[1] - y1) / h, (p[2] - x2) / w, (p[3] - y2) / h]
            rows.append([float(overlap[t, j]), *(float(o) for o in offsets)])
    if not rows:
        print("no true box matched a prediction at IoU >= 0.5")
        return
    r = torch.tensor(rows)
    quartiles = torch.quantile(r[:, 0], torch.tensor([0.1, 0.25, 0.5, 0.75, 0.9])).tolist()
    print(
        f"{len(r)} true boxes matched; IoU mean {r[:, 0].mean():.3f}, deciles/quartiles "
        f"(10/25/50/75/90%) {' '.join(f'{q:.3f}' for q in quartiles)}"
    )
    for k, name in enumerate(("left", "top", "right", "bottom"), start=1):
        print(
            f"{name:>6} edge: mean offset {r[:, k].mean():+.3f}, mean |offset| "
            f"{r[:, k].abs().mean():.3f} of the box's {'width' if k in (1, 3) else 'height'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a detector run folder or its best.pt")
    parser.add_argument("data", help="a Penn-Fudan-layout folder of test photos")
    parser.add_argument("--iou", type=float, nargs="*", default=[0.4, 0.5, 0.55, 0.6, 0.65, 0.7])
    parser.add_argument("--vote", type=float, nargs="*", default=[0.0], help="box-voting IoUs")
    parser.add_argument("--no-offsets", action="store_true", help="the mAP sweep only")
    args = parser.parse_args()
    detector = cnnkit.load(args.run, device="cpu")
    nms_sweep(detector, args.data, args.iou, args.vote)
    if args.no_offsets:
        return
    edge_offsets(detector, args.data)


if __name__ == "__main__":
    main()
