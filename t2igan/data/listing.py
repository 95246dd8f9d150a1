"""What every dataset layout produces before any image is decoded: entries and a skip tally.

Layouts (t2igan/data/layouts.py) read only small files here (split lists, captions,
annotations); the images themselves are decoded once, by t2igan/data/prepared.py.
"""

import hashlib
import os
import pickle
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from t2igan.errors import UserError

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetError(UserError):
    """A dataset cannot be loaded as configured (missing folder, wrong layout, bad split file)."""


@dataclass(frozen=True)
class Entry:
    """One image of a split: `name` is how messages refer to it (its path in the layout).

    `box` is an (x, y, w, h) bounding box in the image's pixels, or None.
    """

    name: str
    image: Path
    captions: tuple[str, ...]
    box: tuple[float, float, float, float] | None = None


@dataclass
class Skips:
    """Files left out (and why), with the names of a few examples per reason."""

    reasons: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, name: str) -> None:
        self.reasons.setdefault(reason, []).append(name)


@dataclass
class Listing:
    """A layout's train and test entries, and everything it had to leave out."""

    splits: dict[str, list[Entry]]
    skips: Skips
    notes: Skips = field(default_factory=Skips)  # kept, but worth saying (e.g. few captions)


def require(path: Path, what: str, layout: str) -> Path:
    """`path` if it exists, else a DatasetError naming what was expected there."""
    if not path.exists():
        raise DatasetError(f"{layout}: expected {what} at {path}, which does not exist")
    return path


def read_captions(path: Path, name: str, skips: Skips) -> list[str] | None:
    """The non-empty lines of caption file `path`; None (and a skip) if unusable."""
    try:
        data = path.read_bytes()
    except OSError as error:
        skips.add(f"caption file unreadable ({type(error).__name__})", name)
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        skips.add("caption file not UTF-8", name)
        return None
    captions = [" ".join(line.split()) for line in text.splitlines()]
    captions = [caption for caption in captions if caption]
    if not captions:
        skips.add("empty caption file", name)
        return None
    return captions


class _NoObjects(pickle.Unpickler):
    """An unpickler that builds only plain data: any class or function in the file is refused,
    so a malicious pickle cannot run code."""

    def find_class(self, module, name):
        raise pickle.UnpicklingError(f"refers to {module}.{name}")


def read_name_list(path: Path) -> list[str]:
    """A split file's names: a pickled list of strings (StackGAN's filenames.pickle, Python 2
    or 3, loaded without executing code) or a text file with one name per line."""
    if path.suffix in (".pickle", ".pkl"):
        try:
            with open(path, "rb") as handle:
                names = _NoObjects(handle, encoding="latin1").load()
        except Exception as error:  # untrusted bytes: any failure to unpickle means "not a list"
            raise DatasetError(f"{path} is not a pickled list of file names ({type(error).__name__}: "
                               f"{error}); a text file with one name per line works too") from None  # fmt: skip
        if not isinstance(names, (list, tuple)) or not all(isinstance(n, (str, bytes)) for n in names):
            raise DatasetError(f"{path} must hold a list of strings, found {type(names).__name__}")
        try:
            return [n.decode("utf-8") if isinstance(n, bytes) else n for n in names]
        except UnicodeDecodeError as error:
            raise DatasetError(f"{path} holds names that are not UTF-8 ({error})") from None
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DatasetError(f"cannot read split file {path}: {error}") from error
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


def split_hash(name: str) -> float:
    """A number in [0, 1) fixed by `name` alone."""
    return int.from_bytes(hashlib.sha1(name.encode("utf-8")).digest()[:8], "big") / 2**64


def in_test_split(name: str, fraction: float) -> bool:
    """A stable split by hashing `name`: adding files never moves existing ones."""
    return split_hash(name) < fraction


def image_files(folder: Path) -> Iterable[Path]:
    """Image files under `folder`, recursively and through symlinked folders (each real folder
    once), in a stable order; hidden files and folders are skipped."""
    seen = set()
    for directory, subfolders, files in os.walk(folder, followlinks=True):
        real = os.path.realpath(directory)
        if real in seen:  # a symlink loop, or a folder linked twice
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(files):
            path = Path(directory) / name
            if not name.startswith(".") and path.suffix.lower() in IMAGE_SUFFIXES and path.is_file():
                yield path
