"""`cnnkit generate`: images from a trained GAN, a few lines over Generator."""

from __future__ import annotations

import argparse
from collections.abc import Callable

from cnnkit.config import PRECISIONS
from cnnkit.errors import CnnkitError


def cmd_generate(args: argparse.Namespace) -> int:
    from cnnkit.predict import load

    generator = load(args.run, device=args.device, precision=args.precision)
    if generator.task != "generate":
        raise CnnkitError(f"{args.run} holds a {generator.task} model, not a GAN")
    written = generator.save(args.out, n=args.n, class_name=args.class_name, seed=args.seed)
    if len(written) == 1:
        print(f"wrote {written[0]} ({args.n} images)")
    else:
        print(f"wrote {len(written)} images into {args.out}")
    return 0


def add_generate_parser(command: Callable[..., argparse.ArgumentParser]) -> None:
    p = command(
        "generate",
        cmd_generate,
        "make images with a trained GAN: one grid (--out grid.png) or an image folder (--out"
        " DIR; DIR/<class>/ for a conditional GAN, ready to train a classifier on)",
    )
    p.add_argument("run", help="a GAN's run folder (its best.pt) or checkpoint")
    p.add_argument("--n", type=int, default=64, help="how many images (64)")
    p.add_argument(
        "--class",
        dest="class_name",
        metavar="NAME",
        help="a conditional GAN: only this class (default: every class in turn)",
    )
    p.add_argument("--seed", type=int, default=None, help="the same seed gives the same images")
    p.add_argument("--out", required=True, help="a .png / .jpg grid, or a folder")
    p.add_argument("--device", default="auto")
    p.add_argument("--precision", default="auto", choices=PRECISIONS)
