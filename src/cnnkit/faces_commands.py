"""`cnnkit faces detect`: a few lines over cnnkit.faces."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable

from cnnkit.errors import CnnkitError


def cmd_faces_detect(args: argparse.Namespace) -> int:
    from cnnkit.faces.detect import FaceDetector, detect_faces

    detector = FaceDetector(min_score=args.min_score)
    results, errors = detect_faces(args.images, args.save_images, args.save_crops, detector)
    if not results:
        path, reason = errors[0]
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        raise CnnkitError(f"none of the images could be read: {path}: {reason}{more}")
    for path, reason in errors:
        print(f"cnnkit: skipped {path}: {reason}", file=sys.stderr)
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


def add_faces_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command("faces", None, "face recognition: find and align faces (detect)")
    sub = p.add_subparsers(
        dest="faces_command", required=True, metavar="detect", parser_class=type(p)
    )
    d = sub.add_parser(
        "detect",
        help="find every face (box, score, 5 landmarks) with MTCNN",
        description="find every face (box, score, 5 landmarks) with MTCNN, whose weights ship"
        " in the facenet-pytorch wheel; an image without a face is reported, not an error",
    )
    d.set_defaults(func=cmd_faces_detect, parser=d)
    d.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    d.add_argument("images", nargs="+", help="image files, folders or globs")
    d.add_argument("--save-images", metavar="DIR", help="draw boxes and landmarks into DIR")
    d.add_argument(
        "--save-crops", metavar="DIR", help="write each face aligned to 112 x 112 into DIR"
    )
    d.add_argument(
        "--min-score", type=float, default=0.9, help="MTCNN score a face must reach (0.9)"
    )
    d.add_argument("--json", action="store_true", help="JSON output")
