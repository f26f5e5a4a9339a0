"""`cnnkit faces detect | align | enroll | identify | verify`: a few lines over cnnkit.faces
and the embedding model's predictor."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from cnnkit.errors import CnnkitError


def cmd_faces_detect(args: argparse.Namespace) -> int:
    from cnnkit.faces.detect import FaceDetector, detect_faces

    detector = FaceDetector(min_score=args.min_score)
    results, errors = detect_faces(args.images, args.save_images, args.save_crops, detector)
    if not results:
        path, reason = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CnnkitError(f"none of the images could be read: {path}: {reason}{more}")
    _print_skipped(errors)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            if not r.faces:
                print(f"{r.source}: no face found")
                continue
            boxes = "; ".join(
                f"({', '.join(f'{v:.0f}' for v in f.box)}) {f.score:.3f}" for f in r.faces
            )
            print(f"{r.source}: {len(r.faces)} face{'s' if len(r.faces) != 1 else ''}: {boxes}")
    return 0


def cmd_faces_align(args: argparse.Namespace) -> int:
    from cnnkit.faces.dataset import align_folder
    from cnnkit.faces.detect import FaceDetector, print_several_faces

    done = align_folder(args.folder, args.out, args.size, FaceDetector(min_score=args.min_score))
    _print_skipped(done.skipped)
    print_several_faces(done.several)
    print(f"{done.faces} faces of {done.people} people aligned to {args.size} px in {done.out}")
    return 0


def _embedder(run: str, device: str) -> Any:
    from cnnkit.predict import load

    embedder = load(run, device=device)
    if getattr(embedder, "task", None) != "embed":
        raise CnnkitError(
            f"{run} is a {embedder.task} model; face commands need an embedding model "
            "(`cnnkit train --preset faces`)"
        )
    return embedder


def cmd_faces_enroll(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnkit.faces.detect import print_several_faces
    from cnnkit.faces.gallery import enroll

    if Path(args.out).suffix != ".npz":  # say so before enrolling, not after
        raise CnnkitError(f"a gallery is an .npz file, not {Path(args.out).name}")
    gallery = enroll(_embedder(args.run, args.device), args.folder)
    path = gallery.save(args.out)
    _print_skipped(gallery.skipped)
    print_several_faces(gallery.several)
    images = sum(gallery.counts)
    print(f"enrolled {len(gallery.names)} people ({images} photos) into {path}")
    return 0


def cmd_faces_identify(args: argparse.Namespace) -> int:
    from cnnkit.faces.detect import print_several_faces
    from cnnkit.faces.gallery import Gallery, identify
    from cnnkit.inputs import expand_paths

    embedder = _embedder(args.run, args.device)
    gallery = Gallery.load(args.gallery)
    paths = [str(p) for p in expand_paths(args.images)]
    found, errors = identify(embedder, gallery, paths, args.threshold)
    if not found:
        path, reason = errors[0]
        raise CnnkitError(f"none of the images could be read: {path}: {reason}")
    _print_skipped(errors)
    print_several_faces([f.source for f in found if f.several_faces])
    if args.json:
        print(json.dumps([f.to_dict() for f in found], indent=2))
        return 0
    for f in found:
        if f.name is None:
            print(f"{f.source}: {f.note}")
        else:
            print(f"{f.source}: {f.name}  (score {f.score:.3f}, nearest {f.nearest})")
    return 0


def cmd_faces_verify(args: argparse.Namespace) -> int:
    embedder = _embedder(args.run, args.device)
    if args.pairs:
        from cnnkit.faces.evaluate import verify_pair_file

        if args.images:
            raise CnnkitError("give two images or --pairs FILE --root DIR, not both")
        if not args.root:
            raise CnnkitError("--pairs needs --root: the folder holding name/name_0001.jpg")
        report = verify_pair_file(embedder, args.pairs, args.root, args.roc, args.threshold)
        if args.json:
            print(json.dumps(report.to_dict(), indent=2))
        else:
            report.show()
        return 0
    if len(args.images) != 2:
        raise CnnkitError("give two images to compare (or --pairs FILE --root DIR)")
    from cnnkit.faces.detect import print_several_faces

    result = embedder.verify(args.images[0], args.images[1], args.threshold)
    print_several_faces(result.several)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        verdict = "same person" if result.same else "different people"
        print(f"{verdict}  (score {result.score:.3f}, threshold {result.threshold:.3f})")
    return 0


def _print_skipped(errors: list[tuple[str, str]]) -> None:
    for path, reason in errors:
        print(f"cnnkit: skipped {path}: {reason}", file=sys.stderr)


def add_faces_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("faces", None, "face recognition: detect, align, enroll, identify and verify faces")
    sub = p.add_subparsers(
        dest="faces_command",
        required=True,
        metavar="detect|align|enroll|identify|verify",
        parser_class=type(p),
    )

    def add(name: str, func: Callable[..., int], help_text: str) -> argparse.ArgumentParser:
        d = sub.add_parser(name, help=help_text, description=help_text)
        d.set_defaults(func=func, parser=d)
        d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return d

    def model_args(d: argparse.ArgumentParser) -> None:
        d.add_argument("run", help="an embedding run folder or its best.pt")
        d.add_argument("--device", default="auto", help="auto | cpu | cuda | mps")

    d = add(
        "detect",
        cmd_faces_detect,
        "find every face (box, score, 5 landmarks) with MTCNN, whose weights ship in the "
        "facenet-pytorch wheel; an image without a face is reported, not an error",
    )
    d.add_argument("images", nargs="+", help="image files, folders or globs")
    d.add_argument("--save-images", metavar="DIR", help="draw boxes and landmarks into DIR")
    d.add_argument(
        "--save-crops", metavar="DIR", help="write each face aligned to 112 x 112 into DIR"
    )
    d.add_argument(
        "--min-score", type=float, default=0.9, help="MTCNN score a face must reach (0.9)"
    )
    d.add_argument("--json", action="store_true", help="JSON output")

    a = add(
        "align",
        cmd_faces_align,
        "turn a folder of people (one sub-folder of photos each) into aligned face crops "
        "to train an embedding model on",
    )
    a.add_argument("folder", help="FOLDER/<person>/<photos>")
    a.add_argument("--out", required=True, help="the folder to write OUT/<person>/*.png into")
    a.add_argument("--size", type=int, default=112, help="crop size in pixels (112)")
    a.add_argument("--min-score", type=float, default=0.9, help="MTCNN score (0.9)")

    e = add(
        "enroll",
        cmd_faces_enroll,
        "enroll the people of a folder (one sub-folder of photos per person) into a gallery",
    )
    model_args(e)
    e.add_argument("folder", help="GALLERY_DIR/<person>/<photos>")
    e.add_argument("--out", required=True, help="the gallery file to write (.npz)")

    i = add(
        "identify",
        cmd_faces_identify,
        "name the person in each photo from a gallery, or 'unknown' below the threshold",
    )
    model_args(i)
    i.add_argument("images", nargs="+", help="image files, folders or globs")
    i.add_argument("--gallery", required=True, help="a gallery .npz from `cnnkit faces enroll`")
    i.add_argument("--threshold", type=float, help="cosine similarity (default: the model's)")
    i.add_argument("--json", action="store_true", help="JSON output")

    v = add(
        "verify",
        cmd_faces_verify,
        "same person or not: two photos, or LFW's pairs file (10-fold accuracy, ROC)",
    )
    model_args(v)
    v.add_argument("images", nargs="*", help="two photos to compare")
    v.add_argument("--pairs", help="a pairs file in LFW's format ('name i j', 'a i b j')")
    v.add_argument("--root", help="the folder of the pairs' images: ROOT/name/name_0001.jpg")
    v.add_argument("--roc", metavar="PNG", help="with --pairs: write the ROC curve here")
    v.add_argument("--threshold", type=float, help="cosine similarity (default: the model's)")
    v.add_argument("--json", action="store_true", help="JSON output")
