"""`cnnkit explain`, `cnnkit filters` and `cnnkit features`: a few lines over cnnkit.explain."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cnnkit.errors import CnnkitError


def _classifier(args: argparse.Namespace, positional: list[str], tasks=("classify",)):
    from cnnkit.commands import predictor_for

    if not args.model and not positional:
        raise CnnkitError("give a checkpoint or run folder (or --model NAME --pretrained imagenet)")
    predictor, rest = predictor_for(args, positional)
    if predictor.task not in tasks:
        kinds = {"classify": "classifiers", "detect": "detectors", "segment": "segmenters"}
        named = ", ".join(kinds[t] for t in tasks[:-1])
        named = f"{named} and {kinds[tasks[-1]]}" if named else kinds[tasks[-1]]
        raise CnnkitError(f"{args.command} is for {named}; this is a {predictor.task} model")
    return predictor, rest


def cmd_explain(args: argparse.Namespace) -> int:
    from cnnkit.explain import explain
    from cnnkit.explain.cam import EXPLAINED_TASKS
    from cnnkit.inputs import expand_paths

    if not args.model and len(args.inputs) < 2:
        raise CnnkitError("give a checkpoint (or run folder) and at least one image")
    predictor, paths = _classifier(args, args.inputs, EXPLAINED_TASKS)
    files = _readable([str(p) for p in expand_paths(paths)])
    results = explain(predictor, files, args.method, args.layer, args.target, args.out, args.conf)
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            print(r.summary())
        print(f"{args.method} on layer {results[0].layer}", file=sys.stderr)
    return 0


def _readable(files: list[str]) -> list[str]:
    """The files that decode; each other one is named on stderr (as predict does), and none
    at all is one error."""
    from cnnkit.commands import _print_skipped
    from cnnkit.data.decode import decode_image

    if not files:
        raise CnnkitError("no image to explain")
    readable, errors = [], []
    for path in files:
        try:
            decode_image(path)
        except CnnkitError as exc:
            if len(files) == 1:
                raise CnnkitError(f"{path}: {exc}") from None
            errors.append((path, str(exc)))
            continue
        readable.append(path)
    _print_skipped(errors)
    if not readable:
        raise CnnkitError(f"no image could be read ({len(files)} skipped)")
    return readable


def cmd_filters(args: argparse.Namespace) -> int:
    from cnnkit.explain.visuals import draw_filters

    classifier, _ = _classifier(args, [args.checkpoint] if args.checkpoint else [])
    layer, path = draw_filters(classifier, args.out)
    print(f"{layer}'s filters written to {path}")
    return 0


def cmd_features(args: argparse.Namespace) -> int:
    from cnnkit.explain.visuals import draw_features

    classifier, rest = _classifier(args, args.inputs)
    if len(rest) != 1:
        raise CnnkitError("give one image")
    if Path(rest[0]).is_dir():
        raise CnnkitError(f"{rest[0]} is a folder: give one image")
    _readable([rest[0]])
    layer, path = draw_features(classifier, rest[0], args.out, args.layer, args.max_maps)
    print(f"{layer}'s feature maps written to {path}")
    return 0


def add_explain_parsers(command, pretrained_flags) -> None:
    """The explain, filters and features subcommands (cli.py's helpers make the parsers)."""
    p = command(
        "explain",
        cmd_explain,
        "class activation maps (Grad-CAM and relatives) over images: where the model looked",
    )
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT PATH", help="a run, then images")
    pretrained_flags(p)
    p.add_argument(
        "--method", default="gradcam", choices=("gradcam", "gradcam++", "layercam", "eigencam")
    )
    p.add_argument(
        "--layer",
        default="auto",
        help="module name (default: a classifier's last feature map; a detector's or "
        "segmenter's last backbone stage)",
    )
    p.add_argument(
        "--class",
        dest="target",
        help="explain this class (default: a classifier's predicted one; a detector's boxes of "
        "every class; a segmenter's most frequent predicted class but the background)",
    )
    p.add_argument(
        "--conf", type=float, help="detectors: explain boxes scoring at least this (the run's)"
    )
    p.add_argument("--out", default="explain", help="folder for the overlays (explain/)")
    p.add_argument("--json", action="store_true", help="print the results as JSON")

    p = command("filters", cmd_filters, "draw the first convolution layer's filters as a grid")
    p.add_argument("checkpoint", nargs="?", help="a checkpoint or run folder (or --model)")
    pretrained_flags(p)
    p.add_argument("--out", default="filters.png")

    p = command("features", cmd_features, "draw one image's feature maps at a layer")
    p.add_argument("inputs", nargs="+", metavar="CHECKPOINT IMAGE", help="a run, then an image")
    pretrained_flags(p)
    p.add_argument("--layer", default="auto", help="module name (default: the last feature map)")
    p.add_argument("--max-maps", type=int, default=64, help="channels drawn (64)")
    p.add_argument("--out", default="features.png")
