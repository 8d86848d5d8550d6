"""Atomic saves: write to a temporary sibling, then rename.

An interrupted save never leaves a half-written file or a folder that a loader would accept: readers see either
the old content or the new one. ``os.replace`` is atomic on POSIX within one filesystem, which a sibling
temporary path guarantees.

Permissions: ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 (private) paths, and some writers (safetensors)
do the same for the files they write. Renamed into place as they are, a teammate on a shared machine could not read
an exported pipeline, a LoRA file or generated images. So what a save publishes gets the permissions a plain
``open()`` / ``mkdir()`` would have given it under the process umask (0644 / 0755 with the usual umask 022);
``mode=`` asks for something stricter (the sealed key of an annotation study is 0600).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path


def current_umask() -> int:
    """The process umask, read without changing it where the OS allows (Linux ``/proc``); else set-and-restore."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def default_mode(directory: bool = False, executable: bool = False) -> int:
    """What ``mkdir`` (0777) or ``open`` (0666; 0777 for an executable) would create under the process umask."""
    base = 0o777 if directory or executable else 0o666
    return base & ~current_umask()


def publish_permissions(path: str | os.PathLike, mode: int | None = None, private=()) -> None:
    """Give ``path`` (a file, or a folder and everything below it) the permissions of a plain write (module doc).

    Files that are executable for their owner stay executable. ``mode`` (a single file) overrides the umask
    default; ``private``: paths relative to the folder ``path`` that get 0600 instead.
    """
    path = Path(path)
    umask = current_umask()
    keep = {os.path.normpath(os.path.join(path, p)) for p in private}
    if path.is_dir() and not path.is_symlink():
        os.chmod(path, 0o777 & ~umask)
        for root, dirs, files in os.walk(path):
            for d in dirs:
                q = os.path.join(root, d)
                if not os.path.islink(q):
                    os.chmod(q, 0o777 & ~umask)
            for name in files:
                q = os.path.join(root, name)
                if os.path.normpath(q) in keep:
                    os.chmod(q, 0o600)
                elif not os.path.islink(q):
                    _chmod_file(q, umask)
    elif path.exists() and not path.is_symlink():
        if mode is not None:
            os.chmod(path, mode)
        else:
            _chmod_file(path, umask)


def _chmod_file(path, umask: int) -> None:
    executable = os.stat(path).st_mode & 0o100
    os.chmod(path, (0o777 if executable else 0o666) & ~umask)


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = True, private=()):
    """Yield a fresh temporary folder next to ``final``; on success it becomes ``final``.

    On an exception the temporary folder is removed and ``final`` is untouched. With ``overwrite`` an existing
    ``final`` is replaced (moved aside first, deleted after the new folder is in place). The folder and everything
    written into it get the umask's permissions before the rename (:func:`publish_permissions`), except the files
    named in ``private`` (relative paths), which get 0600.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite:
        raise FileExistsError(f"{final} exists (pass overwrite=True to replace it)")
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    publish_permissions(tmp, private=private)
    old = None
    if final.exists():
        old = final.parent / f".{final.name}.old-{os.getpid()}"
        os.replace(final, old)
    os.replace(tmp, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def atomic_file(final: str | os.PathLike, mode: str = "wb", permissions: int | None = None):
    """Yield an open temporary file next to ``final``; on success it is flushed, fsynced and renamed to ``final``.

    ``final`` gets the permissions of a plain ``open()`` under the umask (0644 with umask 022), or ``permissions``
    (e.g. 0o600 for a file that must stay private) — set before the rename, so it is never readable more widely.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{final.name}.tmp-", dir=final.parent)
    try:
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, default_mode() if permissions is None else permissions)
        os.replace(tmp, final)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_json(path: str | os.PathLike, obj, indent: int = 2) -> None:
    with atomic_file(path, "w") as f:
        json.dump(obj, f, indent=indent, sort_keys=False, ensure_ascii=False)
        f.write("\n")


def write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_file(path, "w") as f:
        f.write(text)
