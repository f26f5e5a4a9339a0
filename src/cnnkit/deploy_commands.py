"""`cnnkit export` and `cnnkit serve`: a few lines over cnnkit.export and cnnkit.serve each."""

from __future__ import annotations

import argparse
import json
import sys

from cnnkit.errors import CnnkitError


def cmd_export(args: argparse.Namespace) -> int:
    from cnnkit.export import export_model, verify
    from cnnkit.export.parity import summary

    if args.check:
        result = verify(args.checkpoint, args.check, images=args.images)
        print(json.dumps(result, indent=2) if args.json else f"{args.check}: {summary(result)}")
        if not result["passed"]:
            raise CnnkitError(f"{args.check} does not answer as {args.checkpoint} does")
        return 0
    print(f"exporting {args.checkpoint} as {args.format} ...", file=sys.stderr)
    result = export_model(
        args.checkpoint,
        args.format,
        args.out,
        dynamic_batch=args.dynamic_batch,
        bake_preprocessing=args.bake_preprocessing,
        images=args.images,
        opset=args.opset,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        batch = result.metadata["input"]["batch"]
        print(f"{result.path}  ({result.format}, batch {batch}, {result.seconds:.1f}s)")
        print(f"parity: {summary(result.parity)}")
        print(f"report: {result.report}", file=sys.stderr)
    return 0


def add_export_parser(command) -> None:
    """The `export` subcommand's arguments (cli.py's `command` makes the parser)."""
    p = command(
        "export",
        cmd_export,
        "write a checkpoint as ONNX, torch.export (.pt2) or TorchScript with its metadata, and"
        " check that it answers as the checkpoint does",
    )
    p.add_argument("checkpoint", help="a checkpoint file or a run folder (uses its best.pt)")
    p.add_argument("--format", default="onnx", choices=("onnx", "pt2", "torchscript"))
    p.add_argument("--out", help="the file to write (default: beside the checkpoint, best.onnx)")
    p.add_argument(
        "--dynamic-batch", action="store_true", help="any batch size (default: a batch of 1)"
    )
    p.add_argument(
        "--bake-preprocessing",
        action="store_true",
        help="classifiers: the graph takes uint8 pixels and normalises them itself (detectors"
        " and segmenters always do); resizing stays outside",
    )
    p.add_argument(
        "--images",
        nargs="+",
        metavar="PATH",
        help="images for the parity check (default: the run's own data)",
    )
    p.add_argument("--opset", type=int, help="ONNX opset (default: torch.onnx's)")
    p.add_argument(
        "--check", metavar="FILE", help="only check an exported FILE against the checkpoint"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")
