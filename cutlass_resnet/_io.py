"""Outputs written as users expect of ``tee`` or ``curl -o``, and files and folders written whole or not at all:
a crash, a kill or a full disk never leaves half of one behind.

A regular file (or a new name) is replaced whole, atomically; a symbolic link's target is written and the link
kept; a device or a pipe (``/dev/stdout``, ``/dev/null``) is written in place; a folder where a file is to go
is refused, never replaced. Temporary files and folders are siblings of their target, named after it; whoever
writes that target next (under the same lock) removes what a killed writer left. What is written gets the mode
the umask gives, as any tool's output does (a temporary file starts private).
"""

from __future__ import annotations

import contextlib
import ctypes
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Collection, Iterator
from pathlib import Path

__all__ = [
    "file_lock",
    "file_mode",
    "open_output",
    "output_path",
    "output_target",
    "remove_leftovers",
    "replace_folder",
    "sha256_of",
    "write_text",
]


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def file_mode() -> int:
    """The mode a new file gets here: 0o666 less the umask."""
    return 0o666 & ~_umask()


def file_lock(path: Path, folder: Path | None = None):
    """A lock for the processes that write ``path``: beside it (``.<name>.lock``), or in ``folder`` (named by a hash
    of the path) where its folder must hold nothing else. One lock object per path in a process, so a writer that
    holds it may call another that takes it again."""
    from filelock import FileLock

    if folder is None:
        lock = path.parent / f".{path.name}.lock"
    else:
        lock = folder / f"{hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]}.lock"
    lock.parent.mkdir(parents=True, exist_ok=True)
    return FileLock(str(lock), is_singleton=True)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file, read in 1 MiB pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def remove_leftovers(path: Path) -> None:
    """Remove the temporary files and folders killed writers of ``path`` left beside it (call under its lock)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            shutil.rmtree(stale) if stale.is_dir() and not stale.is_symlink() else stale.unlink()


def output_target(path: str | os.PathLike[str]) -> tuple[Path, bool]:
    """Where writing ``path`` lands, and whether in place: a device or a pipe through the name given
    (``/dev/stdout`` may resolve to no path at all) in place; a link's target (the link is kept) or a regular file
    replaced. A folder is refused."""
    given = Path(path)
    mode = given.stat().st_mode if given.exists() else None
    if mode is not None and not stat.S_ISREG(mode) and not stat.S_ISDIR(mode):
        return given, True
    target = Path(os.path.realpath(path))
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder: name a file to write (nothing was replaced)")
    return target, False


@contextlib.contextmanager
def output_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """A temporary file to write an output into inside the block; on success it becomes ``path``: a regular file
    (or a new name) replaced whole, atomically, with the mode the umask gives a new file; a link's target
    written so; a device or a pipe written in place. A folder at ``path`` is refused, and a write that fails (a
    full disk, ``/dev/full``) raises: nothing is left half-written or reported written."""
    target, in_place = output_target(path)
    if in_place:  # a device, a pipe, a socket: written in place, as tee does
        fd, tmp = tempfile.mkstemp(prefix=".cutlass-resnet-", suffix=".tmp")
        os.close(fd)
        try:
            yield Path(tmp)
            with open(tmp, "rb") as source, open(target, "wb") as sink:
                shutil.copyfileobj(source, sink)
        finally:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        return
    fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, file_mode())
        os.replace(tmp, target)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def open_output(path: str | os.PathLike[str], append: bool = False, **kwargs: object):
    """``path`` opened to stream an output into (line by line, so a killed run keeps its lines): a link's target,
    a device or a pipe written in place, a regular file truncated first unless ``append``; a folder refused."""
    return open(output_target(path)[0], "a" if append else "w", **kwargs)  # noqa: SIM115


def write_text(path: str | os.PathLike[str], text: str) -> None:
    """``text`` written to ``path`` as :func:`output_path` writes."""
    with output_path(path) as tmp:
        tmp.write_text(text)


_RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one step (Linux renameat2 RENAME_EXCHANGE); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0


@contextlib.contextmanager
def replace_folder(folder: str | os.PathLike[str], replaces: Collection[str] | None = None) -> Iterator[Path]:
    """A new folder beside ``folder`` to write inside the block; on success it replaces ``folder`` whole.

    Readers see the old folder or the new one, never a mix: where the system can, the two are exchanged in one
    step, else the old is moved aside just before the new is moved in. The entries of ``folder`` not named in
    ``replaces`` are carried over (hard links); those named are the block's to write (or to leave out); with
    ``replaces=None`` nothing is carried over. A writer killed mid-way leaves only a temporary folder, which the
    next writer removes. A link to a folder has its target replaced (the link is kept); a folder where the block
    writes a file (an entry of ``replaces``) is refused, never dropped.
    """
    folder = Path(os.path.realpath(folder))
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{folder} is a file: a folder is written there (nothing was replaced)")
    for name in replaces or ():
        if (folder / name).is_dir() and not (folder / name).is_symlink():
            raise IsADirectoryError(f"{folder / name} is a folder where a file is written: move it away first")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(folder):
        remove_leftovers(folder)
        new = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
        try:
            if folder.is_dir() and replaces is not None:
                for entry in (e for e in folder.iterdir() if e.name not in replaces):
                    target = new / entry.name
                    if entry.is_dir() and not entry.is_symlink():
                        shutil.copytree(entry, target, symlinks=True, copy_function=os.link)
                    else:
                        with contextlib.suppress(OSError):
                            os.link(entry, target, follow_symlinks=False)
            yield new
            written = [new / name for name in replaces] if replaces is not None else list(new.iterdir())
            for path in written:  # some writers (safetensors) make private temporary files and rename them
                if path.is_file() and not path.is_symlink():
                    os.chmod(path, file_mode())
            os.chmod(new, 0o777 & ~_umask())
            if not folder.exists():
                new.rename(folder)
            elif _exchange(new, folder):
                shutil.rmtree(new)  # the old folder, now under the temporary name
            else:
                old = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
                folder.rename(old / "old")
                new.rename(folder)
                shutil.rmtree(old)
        finally:
            shutil.rmtree(new, ignore_errors=True)
