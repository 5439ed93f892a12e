"""Artifacts on disk: written atomically, so a failed or interrupted stage never leaves half a file."""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pipeline.common.errors import PipelineError


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp creates 0600; artifacts are meant to be shipped
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def partial_files(path: str | Path) -> list[Path]:
    """The temporary files :func:`atomic_path` made for ``path`` that are still there (a killed process's)."""
    path = Path(path)
    return sorted(path.parent.glob(f".{path.name}.*.partial"))


@contextlib.contextmanager
def atomic_folder(path: str | Path) -> Iterator[Path]:
    """Yield a new folder beside ``path``; if the block succeeds it replaces ``path`` (absent, empty, or a folder
    the caller has checked may go, removed after the rename), else it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".partial", dir=path.parent))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp creates 0700; artifacts are meant to be shipped
        if path.exists() and any(path.iterdir()):
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".old", dir=path.parent))
            os.replace(path, old)
            try:
                os.replace(tmp, path)
            except BaseException:
                os.replace(old, path)
                raise
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)  # rename(2) replaces an empty folder
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


@contextlib.contextmanager
def folder_locked(folder: str | Path, holder: str) -> Iterator[None]:
    """Hold an exclusive advisory lock on ``folder`` (flock on the folder itself: no lock file to leave behind),
    released when the block ends or the process dies; a PipelineError at once if another process holds it. Where
    the file system cannot lock a folder (NFS emulates flock with write locks, which a folder's descriptor cannot
    take) the block runs unlocked, with a warning."""
    descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise PipelineError(f"{folder} is in use by another {holder} (two runs into one folder would overwrite "
                                "each other's files); wait for it to end, or choose another folder") from None
        except OSError as error:
            logging.getLogger(__name__).warning(
                "cannot lock %s on this file system (%s): nothing stops a second %s into it meanwhile", folder,
                error.strerror, holder)
        yield
    finally:
        os.close(descriptor)


def check_writable(path: str | Path, *, folder: bool = False) -> None:
    """Raise a PipelineError now, before any work, if ``path`` (a file, or with ``folder`` a folder) could not be
    written later: it exists as the other kind, a parent on its way is a file, or the nearest existing folder does
    not take a new file (permissions, a read-only mount). Only a nameless temporary file is made to find out."""
    path = Path(path).absolute()
    kind = "folder" if folder else "file"
    if path.exists() and path.is_dir() != folder:
        raise PipelineError(f"cannot write {path}: it exists and is not a {kind}; choose another path")
    existing = path if folder and path.is_dir() else path.parent
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise PipelineError(f"cannot write {path}: {existing} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise PipelineError(f"cannot write {path}: {existing} does not take new files ({error.strerror}); choose "
                            "another path or fix its permissions") from None


def write_json(path: str | Path, data: Any) -> Path:
    """Write ``data`` as indented JSON, atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
    return Path(path)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
