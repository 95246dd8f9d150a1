"""Files shared between processes: writes that never leave a half-written file behind (temp file
in the same folder, then rename), and a lock beside a local sqlite database."""

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(temp_path)`, then move the result onto `path` in one rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    temp_path = Path(temp_name)
    try:
        write(temp_path)
        with open(temp_path, "rb") as handle:
            os.fsync(handle.fileno())
        # mkstemp makes owner-only files; give the result the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temp_path, 0o666 & ~umask)
        os.replace(temp_path, path)
    finally:
        temp_path.unlink(missing_ok=True)
    return path


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> Path:
    """`np.savez` to `path` atomically (no pickled objects: load with allow_pickle=False)."""

    def write(temp_path: Path) -> None:
        with open(temp_path, "wb") as handle:
            np.savez(handle, **arrays)

    return atomic_write(path, write)


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda temp_path: temp_path.write_text(text, encoding="utf-8"))


def sqlite_path(url: str) -> Path | None:
    """The database file of a local sqlite URL (`sqlite:///<path>`), None for any other URL."""
    return Path(url.removeprefix("sqlite:///")) if url.startswith("sqlite:///") else None


@contextlib.contextmanager
def sqlite_lock(url: str) -> Iterator[None]:
    """Holds an exclusive lock on `<database>.lock` beside a local sqlite database
    (`sqlite:///<path>`) while inside, so processes on one machine that set the database up at
    the same time take turns. Any other URL (a database server) is not locked."""
    database = sqlite_path(url)
    if database is None:
        yield
        return
    lock_path = Path(f"{database}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
