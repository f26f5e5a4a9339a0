"""`cnnkit export` and `cnnkit serve`: a few lines over cnnkit.export and cnnkit.serve each."""

from __future__ import annotations

import argparse
import json
import sys

from cnnkit.errors import CnnkitError


def cmd_export(args: argparse.Namespace) -> int:
    from cnnkit.engine.checkpoint import resolve_checkpoint_path
    from cnnkit.export import check_opset, export_model, output_path, verify
    from cnnkit.export.parity import summary
    from cnnkit.export.quantize import check_int8

    if args.check:
        result = verify(args.checkpoint, args.check, images=args.images)
        print(json.dumps(result, indent=2) if args.json else f"{args.check}: {summary(result)}")
        if not result["passed"]:
            raise CnnkitError(f"{args.check} does not answer as {args.checkpoint} does")
        return 0
    checkpoint = resolve_checkpoint_path(args.checkpoint)
    output_path(checkpoint, args.format, args.out, args.int8)  # a bad --out: say so now
    if args.opset is not None:
        check_opset(args.opset)
    if args.int8:
        check_int8(None, args.format)
    kind = f"int8 {args.format}" if args.int8 else args.format
    print(f"exporting {args.checkpoint} as {kind} ...", file=sys.stderr)
    result = export_model(
        args.checkpoint,
        args.format,
        args.out,
        dynamic_batch=args.dynamic_batch,
        bake_preprocessing=args.bake_preprocessing,
        images=args.images,
        opset=args.opset,
        int8=args.int8,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    else:
        batch = result.metadata["input"]["batch"]
        kind = f"int8 {result.format}" if result.metadata.get("int8") else result.format
        print(f"{result.path}  ({kind}, batch {batch}, {result.seconds:.1f}s)")
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
    p.add_argument(
        "--opset",
        type=int,
        help="ONNX opset (default: torch.onnx's; refused where it cannot convert to it)",
    )
    p.add_argument(
        "--int8",
        action="store_true",
        help="ONNX with int8 weights and activations (onnxruntime's static quantisation,"
        " calibrated on the run's own data or --images): several times faster on CPUs;"
        " kept when its answers agree with the checkpoint's on other images",
    )
    p.add_argument(
        "--check", metavar="FILE", help="only check an exported FILE against the checkpoint"
    )
    p.add_argument("--json", action="store_true", help="print the result as JSON")


def cmd_serve(args: argparse.Namespace) -> int:
    from cnnkit.serve.app import ServeOptions, serve

    options = ServeOptions(
        max_batch=args.max_batch,
        max_wait_ms=args.max_wait_ms,
        queue_size=args.queue,
        max_upload_mb=args.max_upload_mb,
        max_pixels=args.max_pixels,
        upload_timeout_s=args.upload_timeout,
        top_k=args.top_k,
        api_key=args.api_key,
        worker_nice=args.worker_nice,
    )
    if not 0 < args.port < 65536:
        raise CnnkitError(f"--port must be 1-65535, not {args.port}")
    serve(args.model, args.host, args.port, options, log_level=args.log_level)
    return 0


def add_serve_parser(command) -> None:
    """The `serve` subcommand's arguments."""
    p = command(
        "serve",
        cmd_serve,
        "serve a run, checkpoint or exported model over HTTP: POST /predict, a page at /,"
        " /healthz, /readyz, /metrics, /docs",
    )
    p.add_argument("model", help="a run folder, checkpoint, or .onnx / .pt2 / .torchscript file")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--max-batch", type=int, default=8, help="images per model call (8)")
    p.add_argument(
        "--max-wait-ms",
        type=float,
        default=5.0,
        help="how long the first image of a batch waits for others (5 ms)",
    )
    p.add_argument("--queue", type=int, default=64, help="images waiting before 503 (64)")
    p.add_argument("--max-upload-mb", type=float, default=10.0, help="largest upload (10 MB)")
    p.add_argument(
        "--max-pixels", type=int, default=40_000_000, help="largest image, in pixels (40 M)"
    )
    p.add_argument(
        "--upload-timeout",
        type=float,
        default=30.0,
        help="seconds a client has for its request headers, then for the whole body (408) (30)",
    )
    p.add_argument("--top-k", type=int, default=5, help="classifiers: classes returned (5)")
    p.add_argument(
        "--api-key",
        help="require this key in X-API-Key for /predict (default: $CNNKIT_API_KEY, else none)",
    )
    p.add_argument(
        "--worker-nice",
        type=int,
        default=10,
        help="Linux: the model's and decoding threads run this many nice levels below the event"
        " loop, so refusals and health checks answer at once under load (10; 0: off)",
    )
    p.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
