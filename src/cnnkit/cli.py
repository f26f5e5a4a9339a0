"""The `cnnkit` command: argument parsing only; every command calls the Python API."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import os
import re
import sys
import types
from collections.abc import Callable, Sequence
from typing import Any, Union, get_args, get_origin, get_type_hints

from cnnkit.commands import (
    cmd_datasets,
    cmd_demo,
    cmd_embed,
    cmd_evaluate,
    cmd_lr_find,
    cmd_models,
    cmd_predict,
    cmd_presets,
    cmd_show_batch,
    cmd_summary,
    cmd_train,
)
from cnnkit.config import PRECISIONS, TrainConfig
from cnnkit.deploy_commands import add_export_parser, add_serve_parser
from cnnkit.errors import CnnkitError
from cnnkit.explain_commands import add_explain_parsers
from cnnkit.faces_commands import add_faces_parser
from cnnkit.generate_commands import add_generate_parser
from cnnkit.report_commands import add_report_parsers
from cnnkit.shard_commands import add_shard_parser
from cnnkit.tasks.classify.tta import check_mode as check_tta

TRAIN_HELP = {
    "data": "named dataset (cifar10, cifar10-sample, ...), a folder of class folders, or a CSV"
    " (a bare dataset name always means the dataset: ./NAME names a folder called so); for"
    " detection a COCO, YOLO, VOC or image + mask folder; for segmentation image + mask PNGs,"
    " a VOC or a COCO folder",
    "task": "classify | detect | segment | generate (default: the model's task: a detector such"
    " as fcos means detect, a segmenter such as lraspp segment, dcgan or 'G: ... | D: ...'"
    " generate; a layer spec"
    " with --task segment is a fully convolutional segmenter)",
    "model": "model name (see `cnnkit models`), timm:NAME, a layer string, or a YAML layer file;"
    " a GAN of layers: 'G: LAYERS | D: LAYERS' or a YAML file with generator: and discriminator:",
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
    "pretrained": "start from pretrained weights: imagenet (classifiers, detector and segmenter"
    " backbones), coco (torchvision's COCO detectors and segmenters) or none (random"
    " initialisation; a detector's or segmenter's default is its backbone's ImageNet weights)",
    "weights": "a local weights file for --pretrained (instead of the cache or a download)",
    "head": "new classifier head as a layer spec, e.g. flatten,dense:256,relu,dropout:0.5,dense",
    "input_size": "the model's input size (default: the pretrained weights' size, or the data's)",
    "fpn_channels": "detectors: the width of the feature pyramid and heads, a multiple of 32"
    " (default 128; 64 trains 1.4-1.5x faster on 2 CPU cores)",
    "nms_iou": "detectors: the IoU above which NMS drops the lower-scoring of two boxes of a"
    " class, kept in best.pt (default 0.5; predict --iou changes it)",
    "box_vote": "detectors: box voting, kept in best.pt: each box NMS keeps becomes the"
    " score-weighted mean of the candidates overlapping it by at least this IoU (0: off, the"
    " default; predict --box-vote changes it)",
    "box_loss": "detectors: the weight of the box-regression loss in the total, against 1 for"
    " the others (default 1; Ultralytics' 'box' gain is the same idea)",
    "output_stride": "segmenters: 32, 16 or 8: dilate the backbone's last stages instead of"
    " downsampling (finer masks, more computation; default 16, FCN 8)",
    "dice": "segmenters: weight of a soft Dice loss added to the cross-entropy (0: off)",
    "copy_paste": "segmenters: chance that a training image gets the objects (every class but"
    " the first, class 0 = background) of another augmented training image pasted over it"
    " (Simple Copy-Paste; 0: off)",
    "class_weights": "cross-entropy class weights (classifiers, segmenters): auto"
    " (median-frequency balancing of the training images or pixels), none, or one number per"
    " class (w1,w2,...)",
    "sampler": "classifiers: balanced draws every class equally often (with replacement) each"
    " epoch; none (default) shuffles",
    "instances": "segmentation masks: auto | foreground (object ids of one class -> background"
    " / that class: Penn-Fudan's PedMasks, the default there) | classes (each value a class)",
    "gan_loss": "GANs: bce (the non-saturating loss of DCGAN, default) | hinge",
    "spectral_norm": "GANs: spectral normalisation of the discriminator's layers (then no"
    " BatchNorm in it)",
    "latent_dim": "GANs: the size of the generator's noise vector (default 100)",
    "fd_images": "GANs: generated and real validation images per epoch's fd_lite0 / kid_lite0"
    " (default 1000, at most the validation images; each costs a Lite0 pass at 224 px)",
    "time_limit": "stop after this many minutes of training steps (evaluation excluded): the"
    " epoch in progress ends there and is validated and saved as the last",
    "sync_bn": "under torchrun on GPUs: SyncBatchNorm, statistics over the global batch (on the"
    " CPU each process's are averaged at every epoch's end)",
    "dist_timeout": "under torchrun: minutes a process waits for the others before it fails"
    " (default 30)",
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
    "grayscale": "probability of turning an image grey (for models that will see grey photos)",
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
    " 0: a classifier validates on the test split, a detector not at all",
    "image_size": "decode images to this square size (default: the data's most common size)",
    "test_image_size": "segmenters: the size validation, the test and predictions run at"
    " (default: --image-size; larger than the training size often scores better)",
    "resize": "how images of another shape are resized: stretch | crop | pad (classifiers;"
    " default stretch), letterbox | shorter (detectors; default letterbox)",
    "data_root": "folder for named datasets (default $CNNKIT_DATA or ~/.cache/cnnkit/data)",
    "stream": "classifiers: decode the training images on the fly in worker processes instead"
    " of holding them in memory (a folder, CSV list or `cnnkit shard` folder); default: stream"
    " shard folders, and folders whose decoded size is over --memory-budget",
    "memory_budget": "the decoded size (images x 3 x H x W bytes) over which a folder streams:"
    " bytes (8G, 512M) or a share of the available memory (50%%); default $CNNKIT_MEMORY_BUDGET"
    " or 50%%",
    "workers": "streaming: decoding worker processes per training process (default: the CPUs"
    " this process may use, at most 8; 0 decodes in the training process)",
    "project": "parent folder of run folders",
    "name": "run folder name (default: the model's name, numbered)",
    "tensorboard": "also write TensorBoard event files into the run folder",
    "report": "write report.html (a self-contained page: curves, evaluation, top losses with"
    " Grad-CAM, calibration, filters) into the run folder at the end; `cnnkit report RUN`"
    " rebuilds it",
    "channels_last": "channels-last memory format (faster convolutions on most hardware)",
    "compile": "torch.compile the model for training (pays off on GPUs; slower on small CPUs)",
}


_INVALID_CHOICE = re.compile(r"argument ([^:]*): invalid choice: '([^']*)' \(choose from (.*)\)$")


def positive_int(text: str) -> int:
    """argparse's type for counts: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _with_close_choice(message: str) -> str:
    """argparse's "argument command: invalid choice: 'evaulate' (choose from ...)", with the
    close match named when there is one."""
    found = _INVALID_CHOICE.search(message)
    if found is None:
        return message
    what, given, listed = found.groups()
    choices = [c.strip().strip("'") for c in listed.split(",")]
    close = difflib.get_close_matches(given, choices, n=1, cutoff=0.6)
    if not close:
        return message
    return f"unknown {what.split('/')[0].lstrip('-')} '{given}'; did you mean '{close[0]}'?"


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage mistake is one line (with a close match) and exit code 2.

    Abbreviated options are off: `--epoch` is a typo to point out, not a prefix to guess from.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        command = self.prog.removeprefix("cnnkit").strip()
        message = _with_close_choice(message)
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
    p.add_argument(
        "--sweep",
        action="append",
        metavar="KEY=V1,V2",
        help="train one run per combination of these values (repeat for more keys; ';'"
        " separates values that hold commas) into one sweep folder, compared in its"
        " compare.html; rerunning skips the finished runs",
    )
    _add_train_flags(p)

    def inference_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("checkpoint", help="a checkpoint file or a run folder (uses its best.pt)")
        device_flags(p)

    def device_flags(p: argparse.ArgumentParser) -> None:
        p.add_argument("--device", default="auto")
        p.add_argument("--precision", default="auto", choices=PRECISIONS)

    def tta_flag(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--tta",
            default="none",
            type=check_tta,
            help="test-time augmentation: none | flip | flip-translate (detectors and"
            " segmenters: none | flip)",
        )

    def selection_flags(p: argparse.ArgumentParser) -> None:
        """A detector's NMS and box voting, over the run's own (predict and evaluate)."""
        p.add_argument(
            "--iou", type=float, help="detectors: the IoU threshold of NMS (default: the run's)"
        )
        p.add_argument(
            "--box-vote",
            type=float,
            metavar="IOU",
            help="detectors: move each kept box to the score-weighted mean of the candidates"
            " overlapping it by at least IOU (0: off; default: the run's)",
        )

    def pretrained_flags(p: argparse.ArgumentParser) -> None:
        device_flags(p)
        p.add_argument("--model", help="a pretrained model instead of a checkpoint")
        p.add_argument("--pretrained", choices=("imagenet",), help="with --model: its weights")
        p.add_argument("--weights", help="with --model: a local weights file")

    p = command(
        "evaluate",
        cmd_evaluate,
        "a classifier's loss, accuracy, per-class metrics and confusion matrix; a detector's"
        " mAP, per-class AP, precision-recall curves and a gallery; a segmenter's mIoU,"
        " per-class IoU and Dice, pixel accuracy, confusion matrix and a gallery",
    )
    inference_flags(p)
    p.add_argument("--data", help="data to evaluate on (default: the data the model trained on)")
    p.add_argument("--data-root", help="folder for named datasets")
    p.add_argument(
        "--split",
        default="test",
        help="train | val | test (default: test; on the run's own data without a test split, "
        "the images it held out for validation)",
    )
    p.add_argument(
        "--batch-size",
        type=positive_int,
        default=None,
        help="images per pass (256; a detector's 8, a segmenter's 4)",
    )
    p.add_argument("--out", help="folder for the reports (default: beside the checkpoint)")
    p.add_argument("--json", action="store_true", help="print the metrics as JSON")
    tta_flag(p)
    selection_flags(p)
    p.add_argument("--no-progress", action="store_true")

    p = command(
        "predict",
        cmd_predict,
        "classify image files, folders or globs, detect objects, or segment them",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        metavar="CHECKPOINT PATH",
        help="a checkpoint or run folder, then image files, folders or globs; "
        "with --model only images",
    )
    pretrained_flags(p)
    p.add_argument("--top-k", type=int, default=None, help="classifiers: classes shown (3)")
    tta_flag(p)
    p.add_argument("--conf", type=float, help="detectors: the score threshold (default: the run's)")
    selection_flags(p)
    p.add_argument("--save-images", metavar="DIR", help="detectors: draw the boxes into DIR")
    p.add_argument(
        "--save-masks",
        metavar="DIR",
        help="segmenters: write each image's class-index PNG (at its own size) and a colour"
        " overlay into DIR",
    )
    fmt = p.add_mutually_exclusive_group()
    fmt.add_argument("--json", action="store_true", help="JSON output")
    fmt.add_argument("--csv", action="store_true", help="CSV output")

    add_export_parser(command)
    add_serve_parser(command)
    add_explain_parsers(command, pretrained_flags)
    add_report_parsers(command)
    add_faces_parser(command)
    add_generate_parser(command)
    add_shard_parser(command)

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
    p.add_argument("--steps", type=positive_int, default=100)
    p.add_argument("--no-progress", action="store_true")
    _add_train_flags(p)

    p = command("show-batch", cmd_show_batch, "write an image grid of augmented training images")
    p.add_argument("--config", help="YAML file of options; flags override it")
    p.add_argument("--n", type=positive_int, default=32, help="how many images")
    p.add_argument("--out", default="batch.png", help="the image to write (.png or .jpg)")
    _add_train_flags(p)

    p = command("models", cmd_models, "list the built-in models")
    p.add_argument("filter", nargs="?", help="show only names containing this")
    p.add_argument(
        "--task",
        choices=("classify", "detect", "segment", "embed", "generate"),
        default="classify",
    )

    p = command("datasets", cmd_datasets, "list the named datasets, or inspect a dataset's files")
    p.add_argument("--inspect", metavar="PATH", help="say what a dataset's files hold")
    p.add_argument(
        "--task",
        choices=("classify", "detect", "segment"),
        default=None,
        help="with --inspect: read PATH as class folders, a CSV list or an .npz (classify:"
        " images per class, an imbalance warning), boxes (detect) or class masks (segment);"
        " default: a COCO, YOLO, VOC or image + instance-mask layout is detect, else classify",
    )
    p.add_argument(
        "--instances",
        choices=("auto", "foreground", "classes"),
        default=None,
        help="with --inspect --task segment: read mask values as object ids of one class"
        " (foreground) or as classes (classes); auto: foreground for PedMasks",
    )
    p.add_argument("--json", action="store_true", help="with --inspect: JSON output")
    command("presets", cmd_presets, "list the named training recipes and their measured results")

    p = command("summary", cmd_summary, "layers, output shapes and parameter counts of a model")
    p.add_argument("model")
    p.add_argument(
        "--image-size",
        type=int,
        default=None,
        help="input size (default: 32, a detector's or segmenter's own)",
    )
    p.add_argument("--classes", type=int, default=10)

    p = command("demo", cmd_demo, "train, evaluate and predict on the bundled CIFAR-10 sample")
    p.add_argument("--project", default="runs")
    p.add_argument("--epochs", type=int, default=None)
    return parser


def _late_positionals(args: argparse.Namespace, extra: list[str]) -> list[str]:
    """Files after an option (`predict RUN --conf 0.5 a.png`): argparse ends a command's list
    at its first option and leaves the rest over; they join the list. Returns what is left
    (any option word among them leaves them all to the unknown-option error)."""
    if not extra or any(w.startswith("-") for w in extra):
        return extra
    listed = [a for a in args.parser._actions if not a.option_strings and a.nargs in ("+", "*")]
    if len(listed) != 1:
        return extra
    dest = listed[0].dest
    setattr(args, dest, [*(getattr(args, dest) or []), *extra])
    return []


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in argv
    try:
        args, extra = build_parser().parse_known_args(argv)
        extra = _late_positionals(args, extra)
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
    except OSError as exc:  # an output path that cannot be written (a missing folder, /proc)
        if debug:
            raise
        where = f"{exc.filename}: " if exc.filename else ""
        print(f"cnnkit: error: {where}{exc.strerror or exc}", file=sys.stderr)
        return 2
