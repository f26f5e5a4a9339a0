"""load_data(): a dataset name, folder or CSV list -> DataSplits of in-memory ImageSets.

File-based datasets are decoded completely here, before any training: that pass is also the
corrupt-file scan (unreadable files are skipped, listed once on stderr and returned in
``DataSplits.skipped``), and its result is cached so a second load only stats the files.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from cnnkit.data import cache as cache_mod
from cnnkit.data.decode import ImageDecodeError, check_resize_policy, decode_image, read_size
from cnnkit.data.imageset import DataSplits, ImageSet
from cnnkit.data.medmnist import MEDMNIST, NpzFile, named_medmnist_file
from cnnkit.data.named import load_named, named_descriptions
from cnnkit.data.shards import is_shard_folder
from cnnkit.data.sources import (
    SPLIT_NAMES,
    ImageList,
    SourceSplits,
    read_csv_list,
    scan_folder,
    stratified_split,
)
from cnnkit.errors import CnnkitError, did_you_mean

POOL_THRESHOLD = 2000  # decode in worker processes above this many files
SAMPLE_NAME = "cifar10-sample"
MULTILABEL_LIST = "labels.csv"  # a folder holding one is read as that list (multi-label)


@dataclass
class _Request:
    data_root: str | os.PathLike | None
    image_size: tuple[int, int] | None
    resize: str
    cache_dir: Path | None
    progress: bool
    skipped: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class _Source:
    """Lazily loaded splits of one dataset; ``val`` present only for a val folder/rows."""

    classes: list[str] | None
    parts: dict[str, Callable[[], ImageSet]]


# ---------------------------------------------------------------- decoding file lists


def _probe_task(path: str) -> tuple[int, int] | str:
    try:
        return read_size(path)
    except ImageDecodeError as e:
        return str(e)


def _decode_task(args: tuple[str, tuple[int, int], str]) -> np.ndarray | str:
    path, size, resize = args
    try:
        return decode_image(path, size=size, resize=resize)
    except ImageDecodeError as e:
        return str(e)


def _run(task: Callable, items: list, desc: str, progress: bool, sink: Callable) -> None:
    """Call ``sink(i, task(items[i]))`` in order: a process pool for large lists, else inline."""
    bar = tqdm(
        total=len(items),
        desc=desc,
        unit="img",
        file=sys.stderr,
        leave=False,
        disable=None if progress else True,
        mininterval=0.5,
    )
    with bar:
        if len(items) > POOL_THRESHOLD:
            procs = max(1, min(os.cpu_count() or 1, 8))
            chunk = max(16, min(256, len(items) // (procs * 16)))
            with multiprocessing.get_context().Pool(procs) as pool:
                for i, result in enumerate(pool.imap(task, items, chunksize=chunk)):
                    sink(i, result)
                    bar.update()
        else:
            for i, item in enumerate(items):
                sink(i, task(item))
                bar.update()


def _unreadable(path: str) -> str:
    """Why a file the folder scan could not stat is skipped (a dangling or looping link)."""
    try:
        os.stat(path)
    except FileNotFoundError:
        return "file not found"
    except OSError as e:
        return f"cannot be read ({e.strerror or e})"
    return "file not found"  # it came back since the scan: the next run reads it


def _decode_list(files: ImageList, req: _Request, size: tuple[int, int]) -> cache_mod.CacheEntry:
    """Decode every file of a list to ``size`` -> CacheEntry (bad files skipped).

    Results are written straight into one preallocated array, so peak memory stays about one
    copy of the decoded set.
    """
    paths = files.paths
    reasons: list[str | None] = [
        _unreadable(path) if st[0] < 0 else None
        for path, st in zip(paths, files.stats, strict=True)
    ]
    todo = [i for i, r in enumerate(reasons) if r is None]
    images = np.empty((len(todo), 3, size[0], size[1]), dtype=np.uint8)

    def sink(j: int, result: np.ndarray | str) -> None:
        if isinstance(result, str):
            reasons[todo[j]] = result
        else:
            images[j] = result.transpose(2, 0, 1)

    items = [(paths[i], size, req.resize) for i in todo]
    _run(_decode_task, items, f"decoding {files.where}", req.progress, sink)
    ok = [j for j, i in enumerate(todo) if reasons[i] is None]
    if len(ok) < len(todo):
        images = images[ok]
    kept = [todo[j] for j in ok]
    labels = np.asarray([files.labels[i] for i in kept], dtype=np.int64)
    if kept and labels.ndim == 2:  # multi-hot rows: stored compactly
        labels = labels.astype(np.uint8)
    skipped = [(paths[i], r) for i, r in enumerate(reasons) if r is not None]
    return cache_mod.CacheEntry(images, labels, [paths[i] for i in kept], skipped)


def _dataset_size(lists: list[ImageList], req: _Request) -> tuple[int, int]:
    """The most common (H, W) over all files of all splits, read from headers only.

    Unreadable files are ignored here; the decode pass finds them again and records them.
    """
    paths = [p for lst in lists for p in lst.paths]
    sizes: Counter[tuple[int, int]] = Counter()

    def sink(_i: int, result: tuple[int, int] | str) -> None:
        if not isinstance(result, str):
            sizes[result] += 1

    _run(_probe_task, paths, "reading image sizes", req.progress, sink)
    if not sizes:
        where = ", ".join(lst.where for lst in lists)
        raise CnnkitError(f"no readable images in {where}")
    return sizes.most_common(1)[0][0]


def _file_source(found: SourceSplits, req: _Request) -> _Source:
    """Lazy loaders for the splits of a folder/CSV dataset, decoded through the cache.

    Without an explicit image size, each split's cache key covers the whole dataset's file list
    (the most common size depends on all of it), so a cache hit needs no header pass at all.
    """
    lists = found.lists
    if req.image_size is not None:
        size_key = str(req.image_size)
    else:
        size_key = "auto:" + cache_mod.cache_key(
            [p for lst in lists.values() for p in lst.paths],
            [lab for lst in lists.values() for lab in lst.labels],
            [st for lst in lists.values() for st in lst.stats],
            None,
            "",
        )
    fixed: dict[str, tuple[int, int]] = {}

    def size() -> tuple[int, int]:
        if "size" not in fixed:
            fixed["size"] = req.image_size or _dataset_size(list(lists.values()), req)
        return fixed["size"]

    def load(lst: ImageList) -> ImageSet:
        key = cache_mod.cache_key(lst.paths, lst.labels, lst.stats, size_key, req.resize)
        entry = cache_mod.load_entry(req.cache_dir, key) if req.cache_dir is not None else None
        if entry is None:
            entry = _decode_list(lst, req, size())
            if req.cache_dir is not None and not cache_mod.save_entry(
                req.cache_dir, key, entry, found.classes
            ):
                req.cache_dir = None  # warned once; do not retry for the other splits
        req.skipped.extend(entry.skipped)
        if len(entry.labels) == 0:
            first = "; ".join(f"{os.path.basename(p)}: {r}" for p, r in entry.skipped[:3])
            raise CnnkitError(f"every image in {lst.where} is unreadable (first: {first})")
        images, labels = torch.from_numpy(entry.images), torch.from_numpy(entry.labels)
        return ImageSet(images, labels, list(found.classes), entry.paths)

    parts = {split: (lambda lst=lst: load(lst)) for split, lst in lists.items()}
    return _Source(found.classes, parts)


# ---------------------------------------------------------------- registry and resolution


def _named_source(name: str) -> Callable[[_Request], _Source]:
    def make(req: _Request) -> _Source:
        parts = {s: (lambda s=s: load_named(name, s, req.data_root)) for s in ("train", "test")}
        return _Source(None, parts)

    return make


def _npz_source(path: Path) -> _Source:
    npz = NpzFile(path)
    return _Source(npz.classes, {s: (lambda s=s: npz.split(s)) for s in npz.splits})


def _medmnist_source(name: str) -> Callable[[_Request], _Source]:
    def make(req: _Request) -> _Source:
        return _npz_source(named_medmnist_file(name, req.data_root))

    return make


def sample_path() -> Path:
    """Folder of the bundled cifar10-sample (200 train + 50 test PNGs per class)."""
    return Path(str(resources.files("cnnkit.data") / "samples" / SAMPLE_NAME))


def _sample_source(req: _Request) -> _Source:
    root = sample_path()
    if not (root / "train").is_dir():
        raise CnnkitError(f"the bundled {SAMPLE_NAME} is missing from {root}; reinstall cnnkit")
    return _file_source(scan_folder(root), req)


DATASETS: dict[str, tuple[Callable[[_Request], _Source], str]] = {
    **{name: (_named_source(name), desc) for name, desc in named_descriptions().items()},
    SAMPLE_NAME: (
        _sample_source,
        "CIFAR-10 sample bundled with cnnkit: 200 train + 50 test PNGs per class (no download)",
    ),
    **{name: (_medmnist_source(name), info.description) for name, info in MEDMNIST.items()},
}


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every registered dataset name."""
    return [(name, desc) for name, (_, desc) in DATASETS.items()]


def _looks_like_path(spec: str) -> bool:
    return (
        any(ch in spec for ch in "/\\~") or spec.startswith(".") or spec.endswith((".csv", ".npz"))
    )


def named_dataset(spec: str | os.PathLike) -> str | None:
    """The registered dataset `spec` names, else None (a path). The one resolution order of
    load_data and data_location: a bare registered name (a str) is that dataset whatever the
    working directory holds; a folder of the same name is ``./NAME`` or a Path."""
    return spec if isinstance(spec, str) and spec in DATASETS else None


def _shard_source(path: Path, req: _Request) -> _Source:
    """A `cnnkit shard` folder's splits decoded into memory (--no-stream, evaluation)."""
    from cnnkit.data.stream import common_size, default_workers, materialise
    from cnnkit.data.stream_splits import shard_sources

    classes, sources, skipped = shard_sources(path)
    req.skipped.extend(skipped)
    first = sources.get("train") or next(iter(sources.values()), None)
    if first is None:
        raise CnnkitError(
            f"{path}: its dataset.json lists no splits; write it again with `cnnkit shard`"
        )
    fixed: dict[str, tuple[int, int]] = {}

    def load(source) -> ImageSet:
        if "size" not in fixed:
            fixed["size"] = req.image_size or common_size(first)
        source.size, source.resize = fixed["size"], req.resize
        workers = default_workers() if len(source) > POOL_THRESHOLD else 0
        images, bad = materialise(source, workers=workers)
        req.skipped.extend(bad)
        return images

    return _Source(classes, {s: (lambda s=s: load(sources[s])) for s in sources})


def _resolve(spec: str | os.PathLike, req: _Request) -> tuple[str, _Source]:
    text = os.fspath(spec)
    name = named_dataset(spec)
    if name is not None:
        return name, DATASETS[name][0](req)
    path = Path(text).expanduser()
    if path.is_dir() and is_shard_folder(path):  # `cnnkit shard`'s tar shards
        return text, _shard_source(path, req)
    if path.is_dir() and (path / MULTILABEL_LIST).is_file():  # images with a multi-label list
        return text, _file_source(read_csv_list(path / MULTILABEL_LIST), req)
    if path.is_dir():
        return text, _file_source(scan_folder(path), req)
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return text, _npz_source(path)
        if path.suffix.lower() != ".csv":
            hint = (  # LFW's pairs.txt: verification pairs, not a list of images
                "; a face pairs file is scored by `cnnkit faces verify RUN --pairs FILE --root DIR`"
                if path.suffix.lower() == ".txt"
                else ""
            )
            raise CnnkitError(
                f"{text} is a file but neither a .csv list of images nor an .npz{hint}"
            )
        return text, _file_source(read_csv_list(path), req)
    if isinstance(spec, str) and not _looks_like_path(text):
        raise did_you_mean("dataset", text, DATASETS)
    raise CnnkitError(f"data path not found: {text}")


# ---------------------------------------------------------------- load_data


def _norm_size(image_size) -> tuple[int, int] | None:
    if image_size is None:
        return None
    h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if int(h) <= 0 or int(w) <= 0:
        raise CnnkitError(f"image size must be positive, got {image_size}")
    return int(h), int(w)


def _resize_set(data: ImageSet, size: tuple[int, int], resize: str) -> ImageSet:
    """Resize an in-memory set (named datasets) once, up front, with the decode pipeline."""
    if data.size == size:
        return data
    arrays = data.images.permute(0, 2, 3, 1).numpy()
    out = np.stack([decode_image(a, size=size, resize=resize) for a in arrays])
    return ImageSet(
        torch.from_numpy(out).permute(0, 3, 1, 2).contiguous(),
        data.labels,
        data.classes,
        data.paths,
    )


def _warn_skipped(skipped: list[tuple[str, str]]) -> None:
    if not skipped:
        return
    shown = "; ".join(f"{p}: {r}" for p, r in skipped[:5])  # the path: two folders may share a name
    more = "; ..." if len(skipped) > 5 else ""
    n = len(skipped)
    print(
        f"cnnkit: skipped {n} unreadable image{'s' if n != 1 else ''} (first: {shown}{more})",
        file=sys.stderr,
    )


def data_location(spec: str | os.PathLike) -> str:
    """Where data lives, comparable across working directories: a named dataset's name, or a
    folder or file's absolute path (resolved as load_data resolves `spec`)."""
    name = named_dataset(spec)
    if name is not None:
        return name
    path = Path(spec).expanduser()
    return str(path.resolve()) if path.exists() else os.fspath(spec)


def evaluation_data(
    data: str | os.PathLike | None, location: str | None, config: dict[str, Any]
) -> str | os.PathLike:
    """The data to evaluate a run on (`cnnkit evaluate` and cnnkit.evaluate): the data given,
    else the run's recorded `data_location` (absolute, so any working directory finds it), else
    its config's data (checkpoints from before data_location)."""
    chosen = data or location or config.get("data")
    if not chosen:
        raise CnnkitError(
            "the checkpoint records no training data: say which data to evaluate (--data)"
        )
    return chosen


def load_data(
    spec: str | os.PathLike,
    *,
    data_root: str | os.PathLike | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    image_size: int | tuple[int, int] | None = None,
    resize: str = "stretch",
    cache_dir: str | os.PathLike | None = None,
    splits: tuple[str, ...] | list[str] = ("train", "val", "test"),
    progress: bool = True,
) -> DataSplits:
    """Load a dataset name, folder or CSV list into memory as train/val/test ImageSets.

    Validation comes from a val folder (or CSV rows marked val), else a seeded stratified
    ``val_split`` of train, else (``val_split=0``) the test split. Only the ``splits`` asked for
    are returned (and decoded, except train when validation is carved from it).
    """
    check_resize_policy(resize)
    if not 0.0 <= float(val_split) < 1.0:
        raise CnnkitError(f"val_split must be in [0, 1), got {val_split}")
    for s in splits:
        if s not in SPLIT_NAMES:
            raise did_you_mean("split", str(s), SPLIT_NAMES)
    req = _Request(
        data_root=data_root,
        image_size=_norm_size(image_size),
        resize=resize,
        cache_dir=Path(cache_dir).expanduser() if cache_dir is not None else None,
        progress=progress,
    )
    if cache_dir is None:
        req.cache_dir = cache_mod.default_cache_dir()
    name, source = _resolve(spec, req)
    loaded: dict[str, ImageSet] = {}

    def get(split: str) -> ImageSet | None:
        if split not in loaded and split in source.parts:
            data = source.parts[split]()
            if req.image_size is not None:
                data = _resize_set(data, req.image_size, req.resize)
            loaded[split] = data
        return loaded.get(split)

    want = set(splits)
    train = get("train") if ("train" in want or "val" in want) else None
    val, val_source = None, "none"
    if "val" in source.parts:
        val_source = "folder"
    elif "train" in source.parts and val_split > 0:
        val_source = "split"
    elif "test" in source.parts:
        val_source = "test"
    if "val" in want or val_source == "split":
        if val_source == "folder":
            val = get("val")
        elif val_source == "split" and train is not None:
            tr_idx, va_idx = stratified_split(train.labels.numpy(), float(val_split), seed)
            train, val = train.subset(tr_idx), train.subset(va_idx)
        elif val_source == "test":
            val = get("test")
    test = get("test") if "test" in want else None
    if source.classes is not None:
        classes = source.classes
    else:  # named datasets: classes come with the loaded data
        classes = next(iter(loaded.values())).classes if loaded else get("train").classes
    _warn_skipped(req.skipped)
    return DataSplits(
        name=name,
        classes=list(classes),
        train=train if "train" in want else None,
        val=val if "val" in want else None,
        test=test,
        val_source=val_source,
        skipped=list(req.skipped),
    )
