"""Post-processing of detections: score threshold, class-aware NMS, box voting, detections per
image.

``PostProcess`` is stored in a checkpoint and set on any of the four torchvision architectures
with ``apply_postprocess`` (FCOS/RetinaNet/SSD: ``score_thresh``, ``nms_thresh``,
``detections_per_img``; Faster R-CNN: the same on ``roi_heads``), so ``--conf``/``--iou``/
``--box-vote`` change it at prediction time. Without box voting the heads themselves run
torchvision's class-aware ``batched_nms``. With it (Gidaris and Komodakis 2015, Detectron's
``BBOX_VOTE``) the heads hand over their unsuppressed candidates and ``filter_detections`` picks:
NMS keeps one box per object, then each kept box moves to the score-weighted mean of the
candidates of its class that overlap it by at least ``box_vote``, a sharper estimate of its
edges than any one candidate's. Written here: it is a few lines over torchvision's ``box_iou``,
and no well-kept library offers it on torchvision's detectors.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn
from torchvision.ops import batched_nms, box_iou

from cnnkit.errors import CnnkitError


@dataclass
class PostProcess:
    """Keep detections scoring above ``score_threshold`` (as torchvision's heads do); NMS at
    ``iou_threshold`` per class; with ``box_vote`` above 0, each kept box averaged with the
    candidates overlapping it by at least that IoU; at most ``max_detections`` per image, best
    first."""

    score_threshold: float = 0.05
    iou_threshold: float = 0.5
    max_detections: int = 100
    box_vote: float = 0.0  # 0: off

    def __post_init__(self) -> None:
        self.score_threshold = _fraction("score threshold (--conf)", self.score_threshold, 0.0)
        self.iou_threshold = _fraction("IoU threshold (--iou)", self.iou_threshold, 1e-9)
        self.box_vote = _fraction("box voting IoU (--box-vote)", self.box_vote, 0.0)
        value = self.max_detections
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise CnnkitError(f"max detections must be a positive integer, got {value!r}")

    def to_dict(self) -> dict:
        values = asdict(self)
        if not self.box_vote:  # off: a file that cnnkit before box voting also reads
            del values["box_vote"]
        return values

    @classmethod
    def from_dict(cls, d: dict) -> PostProcess:
        unknown = set(d) - {"score_threshold", "iou_threshold", "max_detections", "box_vote"}
        if unknown:
            raise CnnkitError(f"unknown post-processing keys: {', '.join(sorted(unknown))}")
        return cls(**d)


def _fraction(what: str, value: object, low: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not low <= value <= 1:
        bounds = "from 0 to 1" if low == 0 else "above 0 and at most 1"
        raise CnnkitError(f"{what} must be a number {bounds}, got {value!r}")
    return float(value)


def apply_postprocess(model: nn.Module, pp: PostProcess) -> None:
    """Set ``pp`` on a detector: cnnkit's wrapper (its ``postprocess``, and its torchvision
    model's heads), an exported graph's (its ``postprocess`` only), or a bare torchvision
    FCOS/RetinaNet/SSD/Faster R-CNN; it takes effect on the next eval-mode forward. With box
    voting the heads keep their candidates unsuppressed and the wrapper picks the boxes."""
    own = isinstance(getattr(model, "postprocess", None), PostProcess)  # cnnkit's: it picks
    inner = getattr(model, "model", model)  # cnnkit's DetectionModel wraps the torchvision model
    target = getattr(inner, "roi_heads", inner)  # Faster R-CNN keeps them on its box head
    heads = all(hasattr(target, a) for a in ("score_thresh", "nms_thresh", "detections_per_img"))
    if not heads and not own:
        raise TypeError(f"{type(inner).__name__} is not a torchvision detector")
    if pp.box_vote > 0 and not own:
        raise TypeError("box voting needs cnnkit's DetectionModel around the detector")
    if heads:
        target.score_thresh = candidate_threshold(pp)
        target.nms_thresh = 1.0 if pp.box_vote > 0 else pp.iou_threshold  # 1: none suppressed
        target.detections_per_img = VOTE_CANDIDATES if pp.box_vote > 0 else pp.max_detections
    if own:
        model.postprocess = PostProcess.from_dict(pp.to_dict())


# box voting: the candidates a head hands over (the best by score), and the lowest score that
# still votes, whatever --conf is, so that a prediction's boxes are the ones evaluation scored
VOTE_CANDIDATES = 1000
VOTE_SCORE_THRESHOLD = 0.05


def candidate_threshold(pp: PostProcess) -> float:
    """The score a head's candidate needs under ``pp``: its threshold, or with box voting the
    lower of that and ``VOTE_SCORE_THRESHOLD``."""
    if pp.box_vote > 0:
        return min(pp.score_threshold, VOTE_SCORE_THRESHOLD)
    return pp.score_threshold


def nms(
    boxes: torch.Tensor, scores: torch.Tensor, labels: torch.Tensor, iou_threshold: float
) -> torch.Tensor:
    """Indices of the boxes kept by class-aware NMS (boxes of different labels never suppress
    each other), highest score first."""
    if len(boxes) == 0:
        return torch.zeros(0, dtype=torch.int64, device=boxes.device)
    return batched_nms(boxes.float(), scores.float(), labels, float(iou_threshold))


def filter_detections(detections: dict[str, torch.Tensor], pp: PostProcess) -> dict:
    """One image's detections (boxes, scores, labels) after ``pp``: threshold, NMS, box voting
    (among the best ``VOTE_CANDIDATES`` above ``candidate_threshold``, those scoring above
    ``VOTE_SCORE_THRESHOLD`` vote, and each kept box for itself), top k."""
    boxes, scores, labels = detections["boxes"], detections["scores"], detections["labels"]
    candidates = torch.nonzero(scores > candidate_threshold(pp)).flatten()
    if pp.box_vote > 0 and len(candidates) > VOTE_CANDIDATES:  # the best, as a head hands them
        candidates = candidates[scores[candidates].topk(VOTE_CANDIDATES).indices]
    boxes, scores, labels = boxes[candidates], scores[candidates], labels[candidates]
    keep = torch.nonzero(scores > pp.score_threshold).flatten()
    kept = nms(boxes[keep], scores[keep], labels[keep], pp.iou_threshold)
    keep = keep[kept][: pp.max_detections]
    chosen = boxes[keep]
    if pp.box_vote > 0 and len(keep):
        chosen = vote_boxes(keep, boxes, scores, labels, pp.box_vote)
    return {"boxes": chosen, "scores": scores[keep], "labels": labels[keep]}


def vote_boxes(
    keep: torch.Tensor,
    boxes: torch.Tensor,
    scores: torch.Tensor,
    labels: torch.Tensor,
    vote_iou: float,
) -> torch.Tensor:
    """The kept boxes (``keep`` indexes the candidate ``boxes``), each moved to the
    score-weighted mean of the candidates of its label that overlap it by at least
    ``vote_iou`` and score above ``VOTE_SCORE_THRESHOLD``, itself always among them. The same
    voters whatever the score threshold, so evaluation scores the boxes predict returns. A
    candidate may vote for several kept boxes."""
    kept = boxes[keep].float()
    voters = (scores > VOTE_SCORE_THRESHOLD)[None] & (labels[keep][:, None] == labels[None, :])
    voters &= box_iou(kept, boxes.float()) >= vote_iou
    voters[torch.arange(len(keep)), keep] = True  # a kept box votes, even a flat one
    weights = voters * scores.float()[None]
    voted = (weights @ boxes.float()) / weights.sum(1, keepdim=True).clamp_min(1e-12)
    return voted.to(boxes.dtype)
