"""The `cnnkit` command: argument parsing only; every command calls the Python API."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import difflib
import json
import os
import signal
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from cnnkit.config import TrainConfig, build_config, read_yaml_config
from cnnkit.errors import CnnkitError
from cnnkit.tasks.classify.tta import check_mode as check_tta

TRAIN_HELP = {
    "data": "named dataset (cifar10, cifar10-sample, ...), a folder of class folders, or a CSV"
    " (a bare dataset name always means the dataset: ./NAME names a folder called so)",
    "model": "model name (see `cnnkit models`), timm:NAME, a layer string, or a YAML layer file",
    "epochs": "passes over the training data",
    "batch_size": "images per optimisation step",
    "optimizer": "adam | adamw | sgd | muon (Muon for convolution filters, SGD for the rest;"
    " for training from scratch)",
    "lr": "learning rate (peak rate for cosine/onecycle)",
    "momentum": "SGD momentum",
    "nesterov": "Nesterov momentum for SGD (and Muon)",
    "muon_lr": "Muon's rate for convolution filters, held at norm sqrt(out channels): a step's"
    " size relative to the filter (airbench94_muon: 0.24 for 200 steps)",
    "muon_momentum": "Muon's momentum for convolution filters",
    "weight_decay": "L2 (adam, sgd) or decoupled (adamw) weight decay",
    "label_smoothing": "cross-entropy label smoothing",
    "schedule": "learning-rate schedule: constant | linear | cosine | onecycle | triangle",
    "warmup_epochs": "linear warm-up length in epochs",
    "dropout": "dropout rate for models that take one (simple_cnn: before the last dense layer)",
    "pretrained": "start from pretrained weights: imagenet",
    "weights": "a local weights file for --pretrained (instead of the cache or a download)",
    "head": "new classifier head as a layer spec, e.g. flatten,dense:256,relu,dropout:0.5,dense",
    "input_size": "the model's input size (default: the pretrained weights' size, or the data's)",
    "freeze": "keep the pretrained backbone frozen and train the head only (the default with"
    " --pretrained unless --unfreeze or --finetune)",
    "unfreeze": "backbone blocks to train: N (the last N) or all",
    "finetune": "two stages: --head-epochs with the backbone frozen, then --epochs with it"
    " unfrozen (--unfreeze, default all) at lower per-block learning rates",
    "head_epochs": "head-only epochs before fine-tuning",
    "backbone_lr_ratio": "backbone learning rate relative to the head's when fine-tuning",
    "augment": "augmentation preset: none | basic (flip, crop) | standard (+ rotation, zoom,"
    " colour, erasing) | strong (+ TrivialAugment, mixup/cutmix)",
    "flip": "random horizontal flips",
    "alternating_flip": "mirror each image in every other epoch (a seeded half in the first)",
    "crop_padding": "random crops after padding by this many pixels (translation)",
    "rotation": "random rotation up to this many degrees",
    "color_jitter": "brightness/contrast/saturation jitter strength",
    "erasing": "probability of erasing a random rectangle (cutout)",
    "trivialaugment": "TrivialAugmentWide",
    "randaugment": "RandAugment",
    "mixup": "mixup alpha (0: off)",
    "cutmix": "cutmix alpha (0: off)",
    "ema": "average the weights with this decay (e.g. 0.999) and evaluate/save the average",
    "lookahead": "from 30%% of the run, every 5 steps pull the weights back to their average,"
    " with this per-step decay (e.g. 0.95) raised to the 5th power and ramped by (progress)^3",
    "patience": "early stopping: stop after this many epochs without validation improvement"
    " (best.pt keeps the best weights)",
    "clip_grad": "clip the gradient norm to this value",
    "tta": "test-time augmentation for the final test accuracy: none | flip | flip-translate",
    "preset": "a named recipe (see `cnnkit presets`); any other flag overrides its settings;"
    " with --resume it replaces the run's saved settings, but may not change its model or data",
    "seed": "random seed (data split, initialisation, shuffling)",
    "device": "auto | cpu | cuda | cuda:N | mps",
    "precision": "auto | fp32 | bf16 | fp16 (auto: bf16 where the hardware runs it natively)",
    "val_split": "share of training images held out for validation when the data has no val split;"
    " 0 validates on the test split",
    "image_size": "decode images to this square size (default: the data's most common size)",
    "resize": "how images of another shape are resized: stretch | crop | pad",
    "data_root": "folder for named datasets (default $CNNKIT_DATA or ~/.cache/cnnkit/data)",
    "project": "parent folder of run folders",
    "name": "run folder name (default: the model's name, numbered)",
    "tensorboard": "also write TensorBoard event files into the run folder",
    "channels_last": "channels-last memory format (faster convolutions on most hardware)",
    "compile": "torch.compile the model for training (pays off on GPUs; slower on small CPUs)",
}


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (with a close match) and exit code 2.

    Abbreviated options are off: `--epoch` is a typo to point out, not a prefix to guess from.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("cnnkit").strip()
        raise CnnkitError(f"{command}: {message}" if command else message)

    def unknown_options(self, words: list[str]) -> CnnkitError:
        """The error for leftover words, naming the closest option this command has."""
        options = [o for action in self._actions for o in action.option_strings]
        for word in words:
            close = difflib.get_close_matches(word.split("=")[0], options, n=1)
            if close:
                return CnnkitError(f"unknown option {word}; did you mean {close[0]}?")
        return CnnkitError(f"unrecognized arguments: {' '.join(words)}")


def _field_type(annotation: Any) -> type:
    """The scalar type behind `int | None` and friends."""
    if get_origin(annotation) in (Union, types.UnionType):
        annotation = next(a for a in get_args(annotation) if a is not type(None))
    return annotation


def _add_train_flags(parser: argparse.ArgumentParser) -> None:
    hints = get_type_hints(TrainConfig)
    for field in dataclasses.fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = _field_type(hints[field.name])
        help_text = f"{TRAIN_HELP.get(field.name, '')} (default: {field.default})"
        if kind is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=None, help=help_text
            )
        else:
            parser.add_argument(
                flag, type=kind, default=None, metavar=field.name.upper(), help=help_text
            )


# ---- commands --------------------------------------------------------------------------------
def cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.engine import train

    overrides = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    given = {k: v for k, v in overrides.items() if v is not None}
    if args.resume:  # the saved config, then the file's values, then the flags
        from_file = read_yaml_config(args.config) if args.config else {}
        if args.config:
            TrainConfig.from_dict(from_file, args.config)  # its unknown keys, named as its own
        given = {**from_file, **given}
        result = train(resume=args.resume, progress=not args.no_progress, **given)
    else:
        result = train(build_config(args.config, given), progress=not args.no_progress)
    if result.interrupted:
        print(f"interrupted: resume with `cnnkit train --resume {result.run_dir}`")
        return 128 + (result.stopped_by or signal.SIGINT)  # 130 for Ctrl-C, 143 for SIGTERM
    print(f"run folder: {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnkit.data.datasets import evaluation_data
    from cnnkit.tasks.classify import print_report
    from cnnkit.tasks.classify.predictor import Classifier

    clf = Classifier.load(args.checkpoint, device=args.device, precision=args.precision)
    report = clf.evaluate(
        evaluation_data(args.data, clf.data_location, clf.config),
        tta=args.tta,
        split=args.split,
        data_root=args.data_root,
        out_dir=args.out,
        batch_size=args.batch_size,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print_report(report)
        if report.out_dir is not None:
            print(f"reports written to {report.out_dir}")
    return 0


def _classifier_for(args: argparse.Namespace, paths: list[str]) -> tuple[Any, list[str]]:
    """A checkpoint's classifier (first positional), or a pretrained model given by --model."""
    from cnnkit.tasks.classify.predictor import Classifier

    if args.model:
        if args.pretrained != "imagenet":
            raise CnnkitError("--model needs --pretrained imagenet (or give a checkpoint instead)")
        clf = Classifier.from_pretrained(args.model, args.weights, args.device, args.precision)
        return clf, paths
    if len(paths) < 2 and args.command == "predict":
        raise CnnkitError("give a checkpoint (or run folder) and at least one image")
    return Classifier.load(paths[0], device=args.device, precision=args.precision), paths[1:]


def cmd_predict(args: argparse.Namespace) -> int:
    clf, paths = _classifier_for(args, args.inputs)
    predictions, errors = clf.predict_paths(paths, top_k=args.top_k, tta=args.tta)
    for path, reason in errors:
        print(f"cnnkit: skipped {path}: {reason}", file=sys.stderr)
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["source", "rank", "label", "probability"])
        for p in predictions:
            for rank, (label, prob) in enumerate(p.top_k, 1):
                writer.writerow([p.source, rank, label, f"{prob:.6f}"])
    else:
        _print_predictions(predictions)
    if not predictions:
        raise CnnkitError("no image could be read")
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cnnkit.embed import embed_images, save_embeddings

    if args.pretrained and not Path(args.source).exists():
        args.model = args.model or args.source  # `cnnkit embed efficientnet_lite0 --pretrained`
    clf, _ = _classifier_for(args, [args.source])
    # the splits evaluate uses: a run's own data split as the run split it
    images, split = clf.split_images(args.data, args.split, args.data_root)
    features = embed_images(clf, images)
    path = save_embeddings(args.out, features, images)
    print(
        f"{features.shape[0]} x {features.shape[1]} features of {args.data} ({split}) "
        f"written to {path}"
    )
    return 0


def cmd_lr_find(args: argparse.Namespace) -> int:
    from cnnkit.engine.lr_find import lr_find

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cfg = build_config(args.config, {k: v for k, v in given.items() if v is not None})
    result = lr_find(cfg, out_dir=args.out, steps=args.steps, progress=not args.no_progress)
    print(f"suggested learning rate: {result.suggestion:.3g}  (plot: {result.plot})")
    return 0


def _print_predictions(predictions: list) -> None:
    from rich.table import Table

    from cnnkit.tasks.classify.report import output_console

    tta = predictions[0].tta if predictions else "none"
    caption = f"with test-time augmentation ({tta})" if tta != "none" else None
    table = Table(show_lines=False, caption=caption)
    table.add_column("image", overflow="fold")  # a long path wraps, never loses its end
    table.add_column("prediction")
    table.add_column("probability", justify="right")
    table.add_column("next best")
    for p in predictions:
        rest = ", ".join(f"{c} {q:.1%}" for c, q in p.top_k[1:])
        table.add_row(p.source, p.label, f"{p.probability:.1%}", rest)
    output_console().print(table)


def cmd_show_batch(args: argparse.Namespace) -> int:
    from cnnkit.data.show import show_batch

    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    cfg = build_config(args.config, {k: v for k, v in given.items() if v is not None})
    shown = show_batch(
        cfg.data,
        cfg.augment,
        n=args.n,
        out=args.out,
        seed=cfg.seed,
        data_root=cfg.data_root,
        **cfg.augment_overrides(),
    )
    what = shown.augmentation.describe()
    print(f"{shown.count} training images, augmented ({what}), written to {shown.path}")
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    from cnnkit.presets import format_presets

    print(format_presets())
    print("use one with `cnnkit train --preset NAME`; any flag overrides its settings")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from cnnkit.models import list_models

    rows = [(n, d) for n, d in list_models() if not args.filter or args.filter in n]
    width = max((len(n) for n, _ in rows), default=10)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    from cnnkit.data import list_datasets

    for name, description in list_datasets():
        print(f"{name:<15}  {description}")
    print("or a folder of class folders (train/ val/ test/), or a CSV file of path,label rows")
    return 0


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.models import create_model, model_input_size, resolve_spec, summarize

    spec = resolve_spec(args.model)
    size = model_input_size(spec, (args.image_size, args.image_size))
    model = create_model(spec, num_classes=args.classes, input_size=(3, *size))
    print(summarize(model, (3, *size)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cnnkit.demo import run_demo

    run_demo(project=args.project, epochs=args.epochs)
    return 0


# ---- parser ----------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="cnnkit", description="Convolutional networks for image recognition"
    )
    parser.add_argument("--debug", action="store_true", help="show tracebacks for errors")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)

    def command(name: str, func: Callable[[argparse.Namespace], int], help_text: str):
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(func=func, parser=p)
        p.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
        return p

    p = command("train", cmd_train, "train a model and write a run folder")
    p.add_argument("--config", help="YAML file of options; flags override it")
    p.add_argument("--resume", metavar="RUN", help="continue a run folder from its last.pt")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_train_flags(p)

    def inference_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a checkpoint file or a run folder (uses its best.pt)")
        device_flags(p)

    def device_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto")
        p.add_argument("--precision", default="auto")

    def tta_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tta",
            default="none",
            type=check_tta,
            help="test-time augmentation: none | flip | flip-translate",
        )

    def pretrained_flags(p: argparse.ArgumentParser) -> None:
        device_flags(p)
        p.add_argument("--model", help="a pretrained model instead of a checkpoint")
        p.add_argument("--pretrained", choices=("imagenet",), help="with --model: its weights")
        p.add_argument("--weights", help="with --model: a local weights file")

    p = command("evaluate", cmd_evaluate, "loss, accuracy, per-class metrics, confusion matrix")
    inference_flags(p)
    p.add_argument("--data", help="data to evaluate on (default: the data the model trained on)")
    p.add_argument("--data-root", help="folder for named datasets")
    p.add_argument(
        "--split",
        default="test",
        help="train | val | test (default: test; on the run's own data without a test split, "
        "the images it held out for validation)",
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--out", help="folder for the reports (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    tta_flag(p)
    p.add_argument("--no-progress", action="store_true")

    p = command("predict", cmd_predict, "classify image files, folders or globs")
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="CHECKPOINT PATH",
        help="a checkpoint or run folder, then image files, folders or globs; "
        "with --model only images",
    )
    pretrained_flags(p)
    p.add_argument("--top-k", type=int, default=3)
    tta_flag(p)
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output")
    fmt.add_argument("--csv", action="store_true", help="CSV output")

    p = command("embed", cmd_embed, "write backbone features and labels of a dataset (npz)")
    p.add_argument("source", help="a checkpoint or run folder, or a model name with --pretrained")
    pretrained_flags(p)
    p.add_argument("--data", required=True, help="dataset name, folder or CSV")
    p.add_argument("--data-root", help="folder for named datasets")
    p.add_argument("--split", default="train", choices=("train", "val", "test"))
    p.add_argument("--out", default="embeddings.npz", help="output .npz file")

    p = command("lr-find", cmd_lr_find, "learning-rate range test: plot and suggested rate")
    p.add_argument("--config", help="YAML file of options; flags override it")
    p.add_argument("--out", default="runs/lr-find", help="folder for lr_find.png and .csv")
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--no-progress", action="store_true")
    _add_train_flags(p)

    p = command("show-batch", cmd_show_batch, "write an image grid of augmented training images")
    p.add_argument("--config", help="YAML file of options; flags override it")
    p.add_argument("--n", type=int, default=32, help="how many images")
    p.add_argument("--out", default="batch.png", help="the image to write (.png or .jpg)")
    _add_train_flags(p)

    p = command("models", cmd_models, "list the built-in models")
    p.add_argument("filter", nargs="?", help="show only names containing this")

    command("datasets", cmd_datasets, "list the named datasets")
    command("presets", cmd_presets, "list the named training recipes and their measured results")

    p = command("summary", cmd_summary, "layers, output shapes and parameter counts of a model")
    p.add_argument("model")
    p.add_argument("--image-size", type=int, default=32)
    p.add_argument("--classes", type=int, default=10)

    p = command("demo", cmd_demo, "train, evaluate and predict on the bundled CIFAR-10 sample")
    p.add_argument("--project", default="runs")
    p.add_argument("--epochs", type=int, default=None)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args, extra = build_parser().parse_known_args(argv)
        if extra:
            raise args.parser.unknown_options(extra)
        return args.func(args)
    except CnnkitError as exc:
        if debug:
            raise
        print(f"cnnkit: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        if debug:
            raise
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        # the reader went away (`cnnkit models | head`): stop quietly, as Unix tools do
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
