"""5-point similarity alignment: a face's eyes, nose and mouth corners mapped onto a fixed
template, so every crop shows the face at the same place, size and angle.

The template is the 112 x 112 one of ArcFace (InsightFace), the layout face-embedding models
expect; other sizes scale it. The transform is the least-squares similarity over all 5 points
(rotation, one scale, translation: Umeyama's fit, scikit-image's SimilarityTransform; OpenCV's
estimateAffinePartial2D only fits robustly, dropping points); OpenCV warps the pixels.
"""

from __future__ import annotations

import numpy as np

from cnnkit.errors import CnnkitError

# (x, y) of the left eye, right eye, nose tip, left and right mouth corners in a 112 x 112 crop
TEMPLATE_112 = np.array(
    [
        [38.2946, 51.6963],
        [73.5318, 51.5014],
        [56.0252, 71.7366],
        [41.5493, 92.3655],
        [70.7299, 92.2041],
    ],
    dtype=np.float32,
)


def similarity_matrix(landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The 2 x 3 similarity transform taking the 5 landmarks (x, y) to the template."""
    from skimage.transform import SimilarityTransform

    points = np.asarray(landmarks, dtype=np.float64).reshape(5, 2)
    target = TEMPLATE_112.astype(np.float64) * (size / 112.0)
    if hasattr(SimilarityTransform, "from_estimate"):  # scikit-image >= 0.26
        transform = SimilarityTransform.from_estimate(points, target)
        ok = bool(transform)
    else:
        transform = SimilarityTransform()
        ok = transform.estimate(points, target)
    if not ok or not np.isfinite(transform.params).all():
        raise CnnkitError("the face's landmarks are degenerate: it cannot be aligned")
    return transform.params[:2].astype(np.float32)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112) -> np.ndarray:
    """The RGB uint8 (size, size, 3) crop of ``image`` (H, W, 3) with the landmarks on the
    template (pixels outside the photo are black)."""
    import cv2

    matrix = similarity_matrix(landmarks, size)
    return cv2.warpAffine(
        np.ascontiguousarray(image), matrix, (size, size), flags=cv2.INTER_LINEAR, borderValue=0
    )
