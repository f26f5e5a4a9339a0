"""Embedder: a trained embedding model (`cnnkit.load(run)` of an embedding run) that turns
images into unit vectors and compares them: verify two faces, enrol a gallery, identify.

A model trained on `cnnkit faces align` output finds and aligns the face in each photo the
same way (MTCNN, 5 points, the same crop) before embedding it; a photo without a face is
reported, never an error.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.data import decode_image
from cnnkit.data.preprocess import Preprocessing
from cnnkit.engine.device import Precision, resolve_device, resolve_precision
from cnnkit.errors import CnnkitError
from cnnkit.inputs import ImageInput, describe_input
from cnnkit.models import ModelSpec, create_model
from cnnkit.models.pretrained import spec_for_rebuild
from cnnkit.tasks.classify.loop import image_input, pixel_input
from cnnkit.tasks.embed.margin import MarginHead
from cnnkit.tasks.embed.model import embedding_model
from cnnkit.tasks.embed.task import embed_images

NO_FACE = "no face found"


@dataclass
class Embedded:
    """Unit embeddings (N, D) of the inputs that gave one, and why the others gave none."""

    sources: list[str]
    embeddings: np.ndarray
    failed: list[tuple[str, str]]  # (input, reason): unreadable, or no face found
    whole: list[str] = field(default_factory=list)  # no face found: embedded whole (if asked)
    several_at: list[int] = field(default_factory=list)  # positions in sources: several faces

    @property
    def several(self) -> list[str]:
        """The inputs that showed several faces (the largest was embedded)."""
        return [self.sources[k] for k in self.several_at]


@dataclass
class Verification:
    """Two images compared: cosine similarity and the decision at the model's threshold."""

    first: str
    second: str
    score: float
    threshold: float
    same: bool
    several: list[str] = field(default_factory=list)  # showed several faces: the largest used

    def to_dict(self) -> dict[str, Any]:
        return {
            "first": self.first,
            "second": self.second,
            "score": round(self.score, 6),
            "threshold": round(self.threshold, 6),
            "same": self.same,
            "several_faces": self.several,  # of first and second: the largest face was used
        }


class Embedder:
    """The predictor of an embedding run: ``embed``, ``verify``, and through cnnkit.faces the
    gallery's ``enroll`` and ``identify``."""

    task = "embed"

    def __init__(
        self,
        model: torch.nn.Module,
        preprocessing: Preprocessing,
        decode_size: tuple[int, int],
        threshold: float | None,
        align: dict[str, Any] | None,
        device: str = "auto",
        precision: str = "auto",
        config: dict[str, Any] | None = None,
        path: Path | None = None,
        data_location: str | None = None,
        classes: list[str] | None = None,
        dim: int | None = None,
        fingerprint: str | None = None,
    ) -> None:
        self.device = resolve_device(device)
        self.precision = Precision(self.device, resolve_precision(precision, self.device))
        self.model = model.to(self.device).eval()
        self.preprocessing = preprocessing
        self.decode_size = decode_size
        self.threshold = threshold
        self.align = align
        self.config = config or {}
        self.path = path
        self.data_location = data_location
        self.classes = classes or []  # the training identities (not who it can recognise)
        self.dim = int(dim if dim is not None else model.bn.num_features)
        # the checkpoint's sha256: what a gallery records (an exported file carries its own)
        self._fingerprint = fingerprint
        if getattr(model, "takes_pixels", False):  # an exported graph that normalises inside
            self._prepare = pixel_input(preprocessing)
        else:
            self._prepare = image_input(preprocessing)
        self._detector: Any = None

    @classmethod
    def from_checkpoint(
        cls, ckpt: dict[str, Any], path: Path, device: str = "auto", precision: str = "auto"
    ) -> Embedder:
        spec = spec_for_rebuild(ModelSpec.from_dict(ckpt["model"]))
        prep = Preprocessing.from_dict(ckpt["preprocessing"])
        dim = int(ckpt["embedding_dim"])
        net = create_model(spec, num_classes=dim, input_size=(3, *prep.size))
        m = ckpt.get("margin") or {}
        margin = MarginHead(dim, int(ckpt["num_classes"]), m.get("kind", "arcface"))
        model = embedding_model(net, dim, margin)
        try:
            model.load_state_dict(ckpt["state_dict"])
        except RuntimeError:
            raise CnnkitError(f"{path}: weights do not fit model '{spec.name}'") from None
        return cls(
            model,
            prep,
            tuple(ckpt["decode_size"]),
            ckpt.get("threshold"),
            ckpt.get("face_align"),
            device,
            precision,
            ckpt.get("config"),
            path,
            ckpt.get("data_location"),
            ckpt.get("classes"),
        )

    @classmethod
    def from_exported(
        cls, graph: torch.nn.Module, meta: dict[str, Any], path: Path, device: str = "cpu"
    ) -> Embedder:
        """The predictor around an exported graph (`cnnkit export` of an embedding run)."""
        return cls(
            graph,
            Preprocessing.from_dict(meta["preprocessing"]),
            tuple(meta["decode_size"]),
            meta.get("threshold"),
            meta.get("face_align"),
            device,
            "fp32",
            meta.get("config"),
            path,
            meta.get("data_location"),
            meta.get("classes"),
            int(meta["embedding_dim"]),
            meta.get("checkpoint_sha256"),
        )

    def export_fields(self) -> dict[str, Any]:
        """What an exported file's metadata needs besides the common fields."""
        return {
            "embedding_dim": self.dim,
            "decode_size": list(self.decode_size),
            "threshold": self.threshold,
            "face_align": self.align,
        }

    @property
    def fingerprint(self) -> str:
        """The sha256 of the checkpoint these embeddings come from (an exported file of it
        answers with the same), so a gallery can tell which model enrolled it."""
        if self._fingerprint is None:
            from cnnkit.export.metadata import sha256_of

            if self.path is None:
                raise CnnkitError("this embedding model has no checkpoint file to fingerprint")
            self._fingerprint = sha256_of(self.path)
        return self._fingerprint

    # ---- images -> embeddings ------------------------------------------------------------------
    def _face(self, image: np.ndarray) -> tuple[np.ndarray | None, int]:
        """The aligned crop of the largest face (None: no face) and how many faces the photo
        showed, or the image as it is for a model trained on whole images (0 faces counted)."""
        if self.align is None:
            return image, 0
        from cnnkit.faces.detect import FaceDetector, main_face

        if self._detector is None:
            self._detector = FaceDetector()
        faces = self._detector.detect(image, align=int(self.align["size"]))
        face = main_face(faces)
        return (face.crop if face else None), len(faces)

    def crops(
        self, items: list[ImageInput], whole_if_no_face: bool = False, aligned: bool = False
    ) -> tuple[list[str], list[np.ndarray], list[tuple[str, str]], list[str], list[int]]:
        """Decoded (and, for an aligned model, aligned) images at the training decode size,
        with the inputs that failed, were taken whole, and the positions (in the sources) of
        those that showed several faces (the largest used: names of arrays and PIL images are
        not unique); ``aligned``: the inputs already are `cnnkit faces align` crops."""
        sources, crops, failed, whole, several = [], [], [], [], []
        for item in items:
            name = describe_input(item)
            try:
                image = decode_image(item)
            except CnnkitError as exc:
                failed.append((name, str(exc)))
                continue
            face, count = (image, 0) if aligned else self._face(image)
            if count > 1:  # a face was found, so this input is embedded at len(sources)
                several.append(len(sources))
            if face is None and whole_if_no_face:
                face = image
                whole.append(name)
            if face is None:
                failed.append((name, NO_FACE))
                continue
            crops.append(decode_image(face, size=self.decode_size))
            sources.append(name)
        return sources, crops, failed, whole, several

    def decoded(self, images: list[Any]) -> list[np.ndarray]:
        """Images as they are (no face search), decoded at the training decode size."""
        return [decode_image(image, size=self.decode_size) for image in images]

    def embed_arrays(self, crops: list[np.ndarray], batch_size: int = 64) -> np.ndarray:
        """(N, D) unit embeddings of decoded crops (H, W, 3) at the decode size."""
        if not crops:
            return np.zeros((0, self.dim), dtype=np.float32)
        images = torch.from_numpy(np.stack(crops)).permute(0, 3, 1, 2).contiguous()
        out = [
            embed_images(self.model, images[i : i + batch_size], self._prepare, self.precision)
            for i in range(0, len(images), batch_size)
        ]
        return torch.cat(out).numpy()

    def embed(
        self, items: list[ImageInput], whole_if_no_face: bool = False, aligned: bool = False
    ) -> Embedded:
        """Embed files, PIL images or arrays; inputs that give no embedding are listed.
        ``whole_if_no_face``: embed the whole image where no face is found (pairs must all
        be scored); ``aligned``: the inputs already are aligned crops."""
        sources, crops, failed, whole, several = self.crops(list(items), whole_if_no_face, aligned)
        return Embedded(sources, self.embed_arrays(crops), failed, whole, several)

    # ---- comparisons ---------------------------------------------------------------------------
    def resolve_threshold(self, threshold: float | None) -> float:
        """The threshold given (a cosine similarity, -1 to 1), else the one best.pt's
        validation chose."""
        if threshold is not None:
            if isinstance(threshold, bool) or not -1.0 <= float(threshold) <= 1.0:
                raise CnnkitError(
                    f"the threshold is a cosine similarity from -1 to 1, got {threshold!r}"
                )
            return float(threshold)
        if self.threshold is None:
            raise CnnkitError(
                "this model has no verification threshold (it trained without validation "
                "people): pass --threshold"
            )
        return float(self.threshold)

    def verify(
        self, first: ImageInput, second: ImageInput, threshold: float | None = None
    ) -> Verification:
        """Whether two photos show the same person: cosine similarity above the threshold
        chosen on the run's validation pairs (or the one given)."""
        limit = self.resolve_threshold(threshold)
        result = self.embed([first, second])
        if result.failed:
            name, reason = result.failed[0]
            raise CnnkitError(f"{name}: {reason}")
        score = float(result.embeddings[0] @ result.embeddings[1])
        first, second = result.sources
        return Verification(first, second, score, limit, score > limit, result.several)

    def evaluate(self, data: Any, split: str = "test", **options: Any) -> Any:
        """Verification on pairs of the people in ``data``'s split (LFW's 10-fold accuracy)."""
        from cnnkit.faces.evaluate import evaluate_folder

        return evaluate_folder(self, data, split, **options)
