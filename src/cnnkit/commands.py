"""What each `cnnkit` command does: a few lines over the Python API each (cli.py parses)."""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import signal
import sys
from pathlib import Path
from typing import Any

from cnnkit.config import TrainConfig, build_config, read_yaml_config
from cnnkit.errors import CnnkitError
from cnnkit.inputs import output_folder, refuse_run_folder


def given_train_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The TrainConfig flags given on the command line (None: not given)."""
    values = {f.name: getattr(args, f.name) for f in dataclasses.fields(TrainConfig)}
    return {k: v for k, v in values.items() if v is not None}


def cmd_train(args: argparse.Namespace) -> int:
    from cnnkit.engine import train
    from cnnkit.engine.distributed import launched, launched_rank

    given = given_train_flags(args)
    if args.sweep:
        from cnnkit.report_commands import run_sweep

        if args.resume:
            raise CnnkitError("--sweep and --resume do not go together: rerun the sweep to go on")
        if launched():
            raise CnnkitError(
                "--sweep runs in one process: run it without torchrun, or train each "
                "combination under torchrun as its own run"
            )
        return run_sweep(args.sweep, build_config(args.config, given), not args.no_progress)
    if args.resume:  # the saved config, then the file's values, then the flags
        from_file = read_yaml_config(args.config) if args.config else {}
        if args.config:
            TrainConfig.from_dict(from_file, args.config)  # its unknown keys, named as its own
        given = {**from_file, **given}
        result = train(resume=args.resume, progress=not args.no_progress, **given)
    else:
        result = train(build_config(args.config, given), progress=not args.no_progress)
    main_process = launched_rank() == 0  # under torchrun only rank 0 speaks
    if result.interrupted:
        if main_process:
            how = (
                f"the same torchrun command with `--resume {result.run_dir}`"
                if launched()
                else f"`cnnkit train --resume {result.run_dir}`"
            )
            print(f"interrupted: resume with {how}")
        return 128 + (result.stopped_by or signal.SIGINT)  # 130 for Ctrl-C, 143 for SIGTERM
    if main_process:
        print(f"run folder: {result.run_dir}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from cnnkit.data.datasets import evaluation_data
    from cnnkit.predict import load

    predictor = load(args.checkpoint, device=args.device, precision=args.precision)
    if args.iou is not None or args.box_vote is not None:  # mAP at other post-processing
        if predictor.task != "detect":
            raise CnnkitError("--iou and --box-vote are for detectors")
        predictor.set_postprocess(iou=args.iou, box_vote=args.box_vote)
    if args.out is not None:  # before the work: a file in the way must not cost the scores
        refuse_run_folder(args.out, "evaluation reports")
        output_folder(args.out, "evaluation reports")
    data = evaluation_data(args.data, predictor.data_location, predictor.config)
    batch_size = args.batch_size or {"detect": 8, "segment": 4, "generate": 50}.get(
        predictor.task, 256
    )
    report = predictor.evaluate(
        data,
        tta=args.tta,
        split=args.split,
        data_root=args.data_root,
        out_dir=args.out,
        batch_size=batch_size,
        progress=not args.no_progress,
    )
    if args.json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        if predictor.task in ("detect", "segment", "embed", "generate"):
            report.show()
        else:
            from cnnkit.tasks.classify import print_report

            print_report(report)
        if report.out_dir is not None:
            print(f"reports written to {report.out_dir}")
    return 0


def predictor_for(args: argparse.Namespace, paths: list[str]) -> tuple[Any, list[str]]:
    """A checkpoint's predictor (first positional), or a pretrained classifier given by
    --model."""
    from cnnkit.predict import load
    from cnnkit.tasks.classify.predictor import Classifier

    if args.model:
        if args.pretrained != "imagenet":
            raise CnnkitError("--model needs --pretrained imagenet (or give a checkpoint instead)")
        clf = Classifier.from_pretrained(args.model, args.weights, args.device, args.precision)
        return clf, paths
    if len(paths) < 2 and args.command == "predict":
        raise CnnkitError("give a checkpoint (or run folder) and at least one image")
    return load(paths[0], device=args.device, precision=args.precision), paths[1:]


def cmd_predict(args: argparse.Namespace) -> int:
    predictor, paths = predictor_for(args, args.inputs)
    if predictor.task == "embed":
        raise CnnkitError(
            "an embedding model compares faces: use `cnnkit faces verify`, `enroll` and "
            "`identify` (or cnnkit.load(run).embed(images) in Python)"
        )
    if predictor.task == "detect":
        return _predict_boxes(predictor, paths, args)
    if predictor.task == "segment":
        return _predict_masks(predictor, paths, args)
    if _detector_flags(args) or args.save_images:
        raise CnnkitError("--conf, --iou, --box-vote and --save-images are for detectors")
    if args.save_masks:
        raise CnnkitError("--save-masks is for segmenters")
    top_k = 3 if args.top_k is None else args.top_k
    predictions, errors = predictor.predict_paths(paths, top_k=top_k, tta=args.tta)
    _print_skipped(errors)
    if not predictions:
        raise CnnkitError("no image could be read")
    if args.json:
        print(json.dumps([p.to_dict() for p in predictions], indent=2))
    elif args.csv:  # the ranks by probability; "prediction": the class decided (a two-class
        writer = csv.writer(sys.stdout)  # model's threshold may pick the less probable one)
        writer.writerow(["source", "rank", "label", "probability", "prediction"])
        for p in predictions:
            for rank, (label, prob) in enumerate(p.top_k, 1):
                writer.writerow([p.source, rank, label, f"{prob:.6f}", p.label])
    else:
        _print_predictions(predictions)
    return 0


def _detector_flags(args: argparse.Namespace) -> bool:
    return any(v is not None for v in (args.conf, args.iou, args.box_vote))


def _predict_masks(segmenter: Any, paths: list[str], args: argparse.Namespace) -> int:
    if args.top_k is not None or _detector_flags(args):
        raise CnnkitError("--top-k, --conf, --iou and --box-vote are not for segmenters")
    if args.save_images:
        raise CnnkitError("a segmenter writes its masks with --save-masks DIR")
    results, errors = segmenter.predict_paths(paths, tta=args.tta, save_masks=args.save_masks)
    _print_skipped(errors)
    if not results:
        raise CnnkitError("no image could be read")
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["source", "class", "share"])
        for r in results:
            for name, share in r.shares.items():
                writer.writerow([r.source, name, f"{share:.6f}"])
    else:
        _print_masks(results)
    if args.save_masks:
        print(f"{len(results)} masks and overlays written to {args.save_masks}", file=sys.stderr)
    return 0


def _print_masks(results: list) -> None:
    from rich.table import Table

    from cnnkit.tasks.classify.report import output_console

    table = Table(show_lines=False)
    table.add_column("image", overflow="fold")
    table.add_column("size", justify="right")
    table.add_column("classes by pixel share", overflow="fold")
    shown = 6  # the largest few per image; --json and --csv list them all
    for r in results:
        ranked = sorted(r.shares.items(), key=lambda kv: -kv[1])
        found = ", ".join(f"{name} {share:.1%}" for name, share in ranked[:shown] if share > 0)
        table.add_row(r.source, f"{r.width}x{r.height}", found or "-")
    output_console().print(table)


def _predict_boxes(detector: Any, paths: list[str], args: argparse.Namespace) -> int:
    if args.top_k is not None:
        raise CnnkitError("--top-k is for classifiers; a detector takes --conf, --iou, --box-vote")
    if args.save_masks:
        raise CnnkitError("--save-masks is for segmenters; a detector draws with --save-images")
    if args.save_images:  # before predicting: a bad folder must not cost the predictions
        output_folder(args.save_images, "images")
    results, errors = detector.predict_paths(
        paths, conf=args.conf, iou=args.iou, tta=args.tta, box_vote=args.box_vote
    )
    _print_skipped(errors)
    if not results:
        raise CnnkitError("no image could be read")
    if args.json:
        print(json.dumps([r.to_dict() for r in results], indent=2))
    elif args.csv:
        writer = csv.writer(sys.stdout)
        writer.writerow(["source", "label", "score", "x1", "y1", "x2", "y2"])
        for r in results:
            for d in r.detections:
                writer.writerow([r.source, d.label, f"{d.score:.6f}", *d.box])
            if not r.detections:  # an image with nothing found still has its row
                writer.writerow([r.source, "", "", "", "", "", ""])
    else:
        _print_detections(results)
    if args.save_images:
        written = detector.save_images(results, args.save_images)
        print(
            f"{len(written)} images with their boxes written to {args.save_images}",
            file=sys.stderr,
        )
    return 0


def _print_skipped(errors: list[tuple[str, str]]) -> None:
    for path, reason in errors:
        print(f"cnnkit: skipped {path}: {reason}", file=sys.stderr)


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
    for p in predictions:  # the others than the class decided (a threshold may pick the 2nd)
        rest = ", ".join(f"{c} {q:.1%}" for c, q in p.top_k if c != p.label)
        table.add_row(p.source, p.label, f"{p.probability:.1%}", rest)
    output_console().print(table)


def _print_detections(results: list) -> None:
    from rich.table import Table

    from cnnkit.tasks.classify.report import output_console

    table = Table(show_lines=False)
    table.add_column("image", overflow="fold")
    table.add_column("objects", justify="right")
    table.add_column("detections (label score [x1, y1, x2, y2])", overflow="fold")
    shown = 8  # the best few per image; --json and --csv list them all
    for r in results:
        found = "; ".join(
            f"{d.label} {d.score:.2f} [{', '.join(f'{v:.0f}' for v in d.box)}]"
            for d in r.detections[:shown]
        )
        more = len(r.detections) - shown
        found += f"; ... {more} more" if more > 0 else ""
        table.add_row(r.source, str(len(r.detections)), found or "-")
    output_console().print(table)


def cmd_embed(args: argparse.Namespace) -> int:
    from cnnkit.embed import embed_images, save_embeddings

    if args.pretrained and not Path(args.source).exists():
        args.model = args.model or args.source  # `cnnkit embed efficientnet_lite0 --pretrained`
    clf, _ = predictor_for(args, [args.source])
    if clf.task != "classify":
        raise CnnkitError("embed takes a classifier's checkpoint or a pretrained model")
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

    cfg = build_config(args.config, given_train_flags(args))
    result = lr_find(cfg, out_dir=args.out, steps=args.steps, progress=not args.no_progress)
    print(f"suggested learning rate: {result.suggestion:.3g}  (plot: {result.plot})")
    return 0


def cmd_show_batch(args: argparse.Namespace) -> int:
    from cnnkit.tasks.base import check_task_options, task_name

    cfg = build_config(args.config, given_train_flags(args))
    check_task_options(cfg, task_name(cfg))  # as train refuses them: never ignored unsaid
    if task_name(cfg) == "detect":
        from cnnkit.tasks.detect.show import show_detection_batch

        shown = show_detection_batch(cfg, n=args.n, out=args.out)
        what = shown.augmentation
    elif task_name(cfg) == "segment":
        from cnnkit.tasks.segment.show import show_segmentation_batch

        shown = show_segmentation_batch(cfg, n=args.n, out=args.out)
        what = shown.augmentation
    else:
        from cnnkit.data.show import show_batch

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
    if args.task == "detect":
        from cnnkit.tasks.detect.models import list_detectors

        listed = list_detectors()
    elif args.task == "segment":
        from cnnkit.tasks.segment.models import list_segmenters

        listed = list_segmenters()
    elif args.task == "generate":
        from cnnkit.tasks.generate.networks import list_gans

        listed = list_gans()
    else:
        from cnnkit.models import list_models

        listed = list_models()
    rows = [(n, d) for n, d in listed if not args.filter or args.filter in n]
    width = max((len(n) for n, _ in rows), default=10)
    for name, description in rows:
        print(f"{name:<{width}}  {description}")
    if args.task == "classify":
        print(
            "detectors: `cnnkit models --task detect`; segmenters: `--task segment`; GANs:"
            " `--task generate`"
        )
    if args.task == "embed":
        print("any of these trains as an embedding model: `cnnkit train --task embed --model NAME`")
    return 0


def cmd_datasets(args: argparse.Namespace) -> int:
    if args.inspect:
        if args.task is None:  # --instances is about segmentation masks
            args.task = "segment" if args.instances else _inspect_task(args.inspect)
        elif args.instances and args.task != "segment":
            raise CnnkitError("--instances reads segmentation masks: give it with --task segment")
        if args.task == "segment":
            from cnnkit.tasks.segment.inspect import inspect_segmentation

            found = inspect_segmentation(args.inspect, instances=args.instances or "auto")
        elif args.task == "classify":
            from cnnkit.tasks.classify.inspect import inspect_classification

            found = inspect_classification(args.inspect)
        else:
            from cnnkit.tasks.detect.inspect import inspect_detection

            found = inspect_detection(args.inspect)
        if args.json:
            print(json.dumps(found.to_dict(), indent=2))
        else:
            print("\n".join(found.lines()))
        return 0
    from cnnkit.data import list_datasets

    for name, description in list_datasets():
        print(f"{name:<15}  {description}")
    print(
        "or a folder of class folders (train/ val/ test/), a CSV file of path,label rows, or a"
        " MedMNIST-style .npz ({split}_images, {split}_labels)"
    )
    print(
        "detection: COCO JSON, YOLO (data.yaml), Pascal VOC, or images + instance masks "
        "(`cnnkit datasets --inspect PATH` says what it finds)"
    )
    print(
        "segmentation: image + mask PNGs (classes.txt or a YAML of ids), Pascal VOC palettes, "
        "COCO polygons, instance masks of one class (`--inspect PATH --task segment`)"
    )
    return 0


def _inspect_task(path: str) -> str:
    """`datasets --inspect` without --task: a layout detection reads (COCO, YOLO, VOC, image +
    instance-mask folders) is detection; anything else (a named dataset, a CSV list, an .npz,
    class folders) is classification, whose reader then says what is wrong with it."""
    from cnnkit.data.datasets import named_dataset
    from cnnkit.tasks.detect.formats import detect_format

    if named_dataset(path) is not None or Path(path).suffix.lower() in (".csv", ".npz"):
        return "classify"
    try:
        detect_format(path)
    except CnnkitError:
        folder = Path(path)
        # a detection layout with a part missing (labels/ without data.yaml, ...): its error
        marks = ("annotations", "Annotations", "labels", "data.yaml", "PedMasks", "masks")
        if folder.is_dir() and not any((folder / mark).exists() for mark in marks):
            return "classify"
    return "detect"


def cmd_summary(args: argparse.Namespace) -> int:
    from cnnkit.models import summarize
    from cnnkit.tasks.detect.names import is_detector
    from cnnkit.tasks.generate.names import is_gan
    from cnnkit.tasks.segment.names import is_segmenter

    if is_gan(args.model):
        return _summarize_gan(args.model, args.image_size or 32)
    if is_segmenter(args.model):
        from cnnkit.tasks.segment.models import build_segmenter

        model = build_segmenter(
            args.model, args.classes, pretrained_backbone=False, image_size=args.image_size
        )
        size = (model.image_size, model.image_size)
    elif is_detector(args.model):
        from cnnkit.tasks.detect.models import build_detector, detector_spec

        spec = detector_spec(args.model)
        model = build_detector(
            spec, num_classes=args.classes, image_size=args.image_size, pretrained_backbone=False
        )
        size = (model.image_size, model.image_size)
    else:
        from cnnkit.models import create_model, model_input_size, resolve_spec

        spec = resolve_spec(args.model)
        side = args.image_size or 32
        size = model_input_size(spec, (side, side))
        model = create_model(spec, num_classes=args.classes, input_size=(3, *size))
    print(summarize(model, (3, *size)))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from cnnkit.demo import run_demo

    run_demo(project=args.project, epochs=args.epochs)
    return 0


def _summarize_gan(model: str, image_size: int) -> int:
    """The generator's and the discriminator's layers, shapes and parameters, one table each."""
    from cnnkit.models import summarize
    from cnnkit.tasks.generate.networks import GAN, make_gan_spec

    if model.strip().lower() == "dcgan_conditional":
        raise CnnkitError(
            "cnnkit summary covers unconditional GANs; dcgan_conditional is dcgan's networks "
            "given a class (`cnnkit summary dcgan`)"
        )
    spec = make_gan_spec(model, image_size)
    gan = GAN(spec)
    print(summarize(gan.generator, (spec.latent_dim,), name="generator"))
    print(summarize(gan.discriminator, (3, image_size, image_size), name="discriminator"))
    return 0
