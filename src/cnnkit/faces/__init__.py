"""Faces: find and align them (MTCNN, whose weights ship in the facenet-pytorch wheel), the
first half of face recognition; embeddings, enrolment and verification build on it."""

from cnnkit.faces.detect import Face, FaceDetector, detect_faces

__all__ = ["Face", "FaceDetector", "detect_faces"]
