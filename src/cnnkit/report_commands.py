"""`cnnkit report` and `cnnkit compare`, and the sweep half of `cnnkit train`: a few lines over
cnnkit.report and cnnkit.sweep."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable
from typing import Any


def cmd_report(args: argparse.Namespace) -> int:
    from cnnkit.report import build_report

    path = build_report(args.run, out=args.out, data=args.data, device=args.device)
    print(f"report written to {path}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from cnnkit.report.compare import expand_runs, write_comparison

    found = expand_runs(args.runs)
    path = write_comparison(found, args.out)
    print(f"comparison written to {path}")
    return 2 if found.left_out else 0  # as a sweep: some runs left out (named above)


def run_sweep(items: list[str], config: Any, progress: bool) -> int:
    """`cnnkit train --sweep ...`: every combination trained, then compared."""
    from cnnkit.sweep import parse_sweep, sweep

    result = sweep(parse_sweep(items), config, progress=progress)
    done = f"{len(result.finished)} of {result.total} runs finished"
    if result.interrupted:
        print(f"sweep interrupted: {done}; rerun the same command to go on")
        return 128 + (result.stopped_by or signal.SIGINT)
    if result.compare is not None:
        print(f"sweep folder: {result.folder} ({done}); comparison: {result.compare}")
    else:
        print(f"sweep folder: {result.folder} ({done})")
    if result.failed:
        print(
            f"cnnkit: {len(result.failed)} combination(s) could not train (above)", file=sys.stderr
        )
        return 2
    return 0


def add_report_parsers(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "report",
        cmd_report,
        "rebuild a run's report.html: one self-contained page with its curves, evaluation,"
        " confusion, top losses with Grad-CAM, calibration, an augmented batch and filters",
    )
    p.add_argument("run", help="a run folder")
    p.add_argument("--out", help="the page to write (default: RUN/report.html)")
    p.add_argument("--data", help="data to evaluate on (default: the data the run trained on)")
    p.add_argument("--device", default="auto")

    p = command(
        "compare",
        cmd_compare,
        "put runs side by side in one page: model, parameters, the settings that differ,"
        " scores, time and overlaid validation curves (runs of several tasks: one comparison"
        " per task)",
    )
    p.add_argument("runs", nargs="+", help="run folders, or folders of runs (a sweep's)")
    p.add_argument("--out", default="compare.html", help="the page to write")
