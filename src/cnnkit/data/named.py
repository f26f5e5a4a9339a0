"""Named datasets through torchvision (cifar10, cifar100, mnist, fashion-mnist) -> ImageSets.

Files live under the data root (``$CNNKIT_DATA`` or ~/.cache/cnnkit/data). When they are absent
we try one download (unless ``CNNKIT_OFFLINE=1``) with a short socket timeout, so a machine
without internet fails in seconds with a one-line message saying which archive to put where.
"""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from torchvision import datasets as tvd

from cnnkit.data.imageset import ImageSet
from cnnkit.errors import CnnkitError

DOWNLOAD_TIMEOUT_S = 15.0


def default_data_root() -> Path:
    """$CNNKIT_DATA, else ~/.cache/cnnkit/data."""
    env = os.environ.get("CNNKIT_DATA")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "cnnkit" / "data"


def offline() -> bool:
    """CNNKIT_OFFLINE=1 (or true/yes/on): never try a download."""
    return os.environ.get("CNNKIT_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def _cifar_files(cls: type, root: Path) -> tuple[list[str], str, Path]:
    """(archive names, where to get them, folder to put them) for a torchvision CIFAR class."""
    return [cls.filename], cls.url, root


def _mnist_files(cls: type, root: Path) -> tuple[list[str], str, Path]:
    names = [name for name, _md5 in cls.resources]
    return names, cls.mirrors[0], root / cls.__name__ / "raw"


def _cifar_to_set(ds) -> ImageSet:
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
    return ImageSet(images, torch.as_tensor(ds.targets, dtype=torch.int64), list(ds.classes))


def _mnist_to_set(ds) -> ImageSet:
    images = ds.data.to(torch.uint8).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
    return ImageSet(images, ds.targets.to(torch.int64), list(ds.classes))


# name -> (torchvision class, files(cls, root), to ImageSet, description)
_TORCHVISION: dict[str, tuple[type, Callable, Callable, str]] = {
    "cifar10": (
        tvd.CIFAR10,
        _cifar_files,
        _cifar_to_set,
        "CIFAR-10: 60,000 32x32 colour images in 10 classes (torchvision)",
    ),
    "cifar100": (
        tvd.CIFAR100,
        _cifar_files,
        _cifar_to_set,
        "CIFAR-100: 60,000 32x32 colour images in 100 classes (torchvision)",
    ),
    "mnist": (
        tvd.MNIST,
        _mnist_files,
        _mnist_to_set,
        "MNIST: 70,000 28x28 handwritten digits, as RGB (torchvision)",
    ),
    "fashion-mnist": (
        tvd.FashionMNIST,
        _mnist_files,
        _mnist_to_set,
        "Fashion-MNIST: 70,000 28x28 clothing images in 10 classes, as RGB",
    ),
}


def named_descriptions() -> dict[str, str]:
    """name -> one-line description of every torchvision-backed dataset."""
    return {name: entry[3] for name, entry in _TORCHVISION.items()}


@contextlib.contextmanager
def download_timeout() -> Iterator[None]:
    """Sockets opened inside give up after DOWNLOAD_TIMEOUT_S: offline fails in seconds."""
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        yield
    finally:
        socket.setdefaulttimeout(old)


def _download(cls: type, root: Path, train: bool):
    with download_timeout():
        return cls(str(root), train=train, download=True)


def load_named(name: str, split: str, data_root: str | os.PathLike | None = None) -> ImageSet:
    """The ``split`` ("train" or "test") of a torchvision dataset, downloading it if allowed."""
    cls, files, to_set, _ = _TORCHVISION[name]
    root = Path(data_root).expanduser() if data_root is not None else default_data_root()
    train = split == "train"
    try:
        ds = cls(str(root), train=train, download=False)
    except RuntimeError:
        names, url, folder = files(cls, root)
        have_archives = all((folder / n).is_file() for n in names)  # extracting needs no network
        reason = "CNNKIT_OFFLINE=1"
        ds = None
        if have_archives or not offline():
            try:
                ds = _download(cls, root, train)
            except Exception as e:  # URLError, timeout, bad md5, unwritable folder, ...
                reason = " ".join(f"{type(e).__name__}: {e}".split())[:200]
        if ds is None:
            raise CnnkitError(
                f"{name} not found and could not be downloaded ({reason}): put "
                f"{', '.join(names)} (from {url}) in {folder}{os.sep} and run again"
            ) from None
    return to_set(ds)
