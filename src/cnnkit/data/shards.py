"""Tar shards in WebDataset's layout: `cnnkit shard DIR --out SHARDS/` writes them, the stream
reads them.

A shard folder holds `<split>-000000.tar`, `<split>-000001.tar`, ... and `dataset.json` (the
class names and each split's shards and image count). Each tar is a plain POSIX tar of samples,
a sample being the members that share a key (the name up to the first dot of its base name):
`<key>.<png|jpg|...>` (the image file's bytes, unchanged) and `<key>.cls` (the class index as
text). The webdataset package, or any tar reader, reads them as they are. cnnkit reads them with
the standard library: one pass over the member headers records where each image's bytes start,
so any image can then be read with one `os.pread`, which a seeded global shuffle and an exact
resume need.
"""

from __future__ import annotations

import io
import json
import os
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.data.decode import IMAGE_EXTENSIONS, ImageDecodeError, decode_image
from cnnkit.data.sources import SPLIT_NAMES, SourceSplits, read_csv_list, scan_folder
from cnnkit.errors import CnnkitError

SHARD_INDEX = "dataset.json"
SHARD_FORMAT = "cnnkit-shards"
SHARD_VERSION = 1
DEFAULT_SHARD_SIZE = 5000  # images per tar (CIFAR-10's 32x32 PNGs: ~12 MB a shard)
SHUFFLE_SEED = 0  # images are written in a seeded shuffled order, so a sequential reader mixes


@dataclass
class ShardSummary:
    """What write_shards wrote: shard files and images per split, and the files left out."""

    out: Path
    shards: dict[str, list[str]] = field(default_factory=dict)
    images: dict[str, int] = field(default_factory=dict)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)


@dataclass
class ShardMembers:
    """Where the images of one split lie in its shards: per image the tar (an index into
    `files`), the byte offset and length of its member's data, its class and its name."""

    files: list[str]
    shard: np.ndarray  # int32 (N,)
    offset: np.ndarray  # int64 (N,)
    length: np.ndarray  # int64 (N,)
    labels: np.ndarray  # int64 (N,)
    names: np.ndarray  # bytes (N,): "train-000000.tar:airplane/0001.png"
    skipped: list[tuple[str, str]] = field(default_factory=list)


def is_shard_folder(path: str | os.PathLike) -> bool:
    """Whether `path` is a folder `cnnkit shard` wrote (it holds a dataset.json of ours); a
    dataset.json beside .tar shards that cannot be read is one error naming it."""
    index = Path(path) / SHARD_INDEX
    if not index.is_file():
        return False
    try:
        data = json.loads(index.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        if any(Path(path).glob("*.tar")):
            raise CnnkitError(
                f"{index} cannot be read ({e}): write the shards again with `cnnkit shard`"
            ) from None
        return False
    return isinstance(data, dict) and data.get("format") == SHARD_FORMAT


def _source_lists(src: Path) -> SourceSplits:
    if not src.exists():
        raise CnnkitError(f"data path not found: {src}")
    if src.is_file() and src.suffix.lower() == ".csv":
        found = read_csv_list(src)
    elif src.is_dir():
        found = scan_folder(src)
    else:
        raise CnnkitError(f"{src} is neither a folder of class folders nor a .csv list")
    if any(lst.labels and isinstance(lst.labels[0], list) for lst in found.lists.values()):
        raise CnnkitError(f"{src} is a multi-label list; shards hold one class per image")
    return found


def _sample_key(path: str, used: set[str], class_name: str) -> str:
    """A WebDataset key: the class and file stem, dots replaced (a key ends at the first dot)."""
    stem = os.path.splitext(os.path.basename(path))[0].replace(".", "_")
    key = f"{class_name}/{stem}"
    while key in used:
        key += "_"
    used.add(key)
    return key


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mode = 0o444
    info.mtime = 0  # the same files give the same shards
    tar.addfile(info, io.BytesIO(data))


def _read_checked(path: str) -> bytes:
    """The file's bytes if they decode as the stream will decode them, every pixel (a header
    alone passes for a file cut short, which would then be packed and skipped every epoch)."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ImageDecodeError(e.strerror or str(e)) from None
    decode_image(data)
    return data


def write_shards(
    src: str | os.PathLike,
    out: str | os.PathLike,
    shard_size: int = DEFAULT_SHARD_SIZE,
    progress: bool = True,
) -> ShardSummary:
    """Write the images of a folder of class folders (train/ val/ test/ or classes at the top)
    or a CSV list as tar shards of `shard_size` images into the empty or new folder `out`.
    Files that do not decode (no image header, cut short, corrupt, too many pixels) are left
    out and returned in `skipped`."""
    if not isinstance(shard_size, int) or shard_size < 1:
        raise CnnkitError(f"--shard-size must be a whole number >= 1, got {shard_size!r}")
    found = _source_lists(Path(src).expanduser())
    out = Path(out).expanduser()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CnnkitError(f"{out} exists and is not an empty folder; choose a new --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CnnkitError(f"cannot create {out}: {e.strerror or e}") from None
    summary = ShardSummary(out)
    rng = np.random.Generator(np.random.PCG64(SHUFFLE_SEED))
    for split, lst in found.lists.items():
        order = rng.permutation(len(lst))
        summary.shards[split], summary.images[split] = [], 0
        used: set[str] = set()
        tar, count = None, 0
        for i in order:
            path, label = lst.paths[i], int(lst.labels[i])
            try:
                data = _read_checked(path)
            except ImageDecodeError as e:
                summary.skipped.append((path, str(e)))
                continue
            if tar is None or count == shard_size:
                if tar is not None:
                    tar.close()
                name = f"{split}-{len(summary.shards[split]):06d}.tar"
                summary.shards[split].append(name)
                tar = tarfile.open(out / name, "w", format=tarfile.PAX_FORMAT)  # noqa: SIM115
                count = 0
            key = _sample_key(path, used, found.classes[label])
            _add_member(tar, key + os.path.splitext(path)[1].lower(), data)
            _add_member(tar, key + ".cls", str(label).encode())
            count += 1
            summary.images[split] += 1
        if tar is not None:
            tar.close()
        if progress:
            print(f"{split}: {summary.images[split]} images in {len(summary.shards[split])} shards")
    index = {
        "format": SHARD_FORMAT,
        "version": SHARD_VERSION,
        "classes": list(found.classes),
        "splits": {
            s: {"shards": summary.shards[s], "images": summary.images[s]} for s in summary.shards
        },
    }
    (out / SHARD_INDEX).write_text(json.dumps(index, indent=1) + "\n")  # last: marks it done
    return summary


def read_shard_index(folder: str | os.PathLike) -> tuple[list[str], dict[str, list[str]]]:
    """(class names, split -> shard file paths) of a shard folder."""
    folder = Path(folder)
    try:
        index = json.loads((folder / SHARD_INDEX).read_text())
        classes = [str(c) for c in index["classes"]]
        splits = {
            s: [str(folder / name) for name in index["splits"][s]["shards"]]
            for s in index["splits"]
            if s in SPLIT_NAMES
        }
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CnnkitError(f"{folder / SHARD_INDEX} is not a readable shard index ({e})") from None
    return classes, splits


def _split_name(name: str) -> tuple[str, str]:
    """(key, extension) of a member name: WebDataset's key ends at the base name's first dot."""
    folder, base = os.path.split(name)
    stem, dot, ext = base.partition(".")
    return (os.path.join(folder, stem) if folder else stem), ext.lower() if dot else ""


def scan_shards(files: list[str], num_classes: int) -> ShardMembers:
    """One pass over the member headers of `files` (and the tiny .cls members): where each
    sample's image lies. A sample without an image member or a valid class, and the unread
    rest of a truncated tar, are skipped and listed."""
    rows: list[tuple[int, int, int, int, str]] = []
    skipped: list[tuple[str, str]] = []
    image_exts = {e.lstrip(".") for e in IMAGE_EXTENSIONS}
    for s, path in enumerate(files):
        base = os.path.basename(path)
        samples: dict[str, dict] = {}
        try:
            with tarfile.open(path, "r:") as tar:
                for member in tar:
                    if not member.isfile():
                        continue
                    key, ext = _split_name(member.name)
                    sample = samples.setdefault(key, {})
                    if ext == "cls":
                        handle = tar.extractfile(member)
                        sample["cls"] = handle.read(32) if handle is not None else b""
                    elif ext in image_exts and "image" not in sample:
                        sample["image"] = (member.offset_data, member.size, member.name)
        except (tarfile.TarError, OSError) as e:
            skipped.append((path, f"unreadable tar after {len(samples)} samples ({e})"))
        for key, sample in samples.items():
            where = f"{base}:{key}"
            if "image" not in sample:
                skipped.append((where, "no image member in the sample"))
                continue
            try:
                label = int(sample.get("cls", b"").decode("ascii").strip())
            except (UnicodeDecodeError, ValueError):
                skipped.append((where, "no class index (.cls) in the sample"))
                continue
            if not 0 <= label < num_classes:
                skipped.append((where, f"class index {label} outside 0..{num_classes - 1}"))
                continue
            offset, size, name = sample["image"]
            rows.append((s, offset, size, label, f"{base}:{name}"))
    return ShardMembers(
        files=list(files),
        shard=np.asarray([r[0] for r in rows], dtype=np.int32),
        offset=np.asarray([r[1] for r in rows], dtype=np.int64),
        length=np.asarray([r[2] for r in rows], dtype=np.int64),
        labels=np.asarray([r[3] for r in rows], dtype=np.int64),
        names=np.asarray([os.fsencode(r[4]) for r in rows], dtype=bytes),
        skipped=skipped,
    )
