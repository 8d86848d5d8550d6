"""Atomic saves: write to a temporary sibling, then rename.

An interrupted save never leaves a half-written file or a folder that a loader would accept: readers see either
the old content or the new one. ``os.replace`` is atomic on POSIX within one filesystem, which a sibling
temporary path guarantees.

Permissions: ``tempfile.mkstemp`` / ``mkdtemp`` create 0600 / 0700 (private) paths, and some writers (safetensors)
do the same for the files they write. Renamed into place as they are, a teammate on a shared machine could not read
an exported pipeline, a LoRA file or generated images. So what a save publishes gets the permissions a plain
``open()`` / ``mkdir()`` would have given it under the process umask (0644 / 0755 with the usual umask 022);
``mode=`` asks for something stricter (the sealed key of an annotation study is 0600).

**Nothing of the user's is deleted.** Every folder :func:`atomic_directory` publishes carries ``.msdm-output.json``,
the list of the files msdm wrote into it. A folder may later be replaced only when that list covers everything in
it: a folder of captions, images and notes — or an msdm folder someone added a file to — is refused (naming what
is not msdm's), never deleted; a path that is a file is refused too. Commands check the same before any work
(:func:`check_output_dir`): an existing, non-empty ``--out`` needs ``--overwrite``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from pathlib import Path

from msdm.errors import OutputExistsError

OUTPUT_MARKER = ".msdm-output.json"  # the files msdm wrote into a folder it published (module docstring)


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


def _files(folder: Path) -> list[str]:
    """Every file and link below ``folder``, as sorted relative POSIX paths (empty folders are not content)."""
    out = []
    for root, dirs, files in os.walk(folder):
        for name in files + [d for d in dirs if os.path.islink(os.path.join(root, d))]:
            out.append(Path(os.path.relpath(os.path.join(root, name), folder)).as_posix())
    return sorted(out)


def read_output_marker(folder: str | os.PathLike) -> dict | None:
    try:
        record = json.loads((Path(folder) / OUTPUT_MARKER).read_text())
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def foreign_files(folder: str | os.PathLike) -> list[str] | None:
    """Files in ``folder`` that msdm did not write there (not in its :data:`OUTPUT_MARKER`); ``None`` when the
    folder has no marker at all (not written by msdm, or by an msdm older than the marker).

    A folder msdm is still writing (or whose writer was killed: ``"complete": false``) was claimed empty
    (:func:`claim_output_dir`), so everything in it is msdm's."""
    folder = Path(folder)
    record = read_output_marker(folder)
    if record is None:
        return None
    if record.get("complete") is False:
        return []
    listed = set(record.get("files", []))
    return [f for f in _files(folder) if f != OUTPUT_MARKER and f not in listed]


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_replaceable(path: str | os.PathLike, option: str = "the output folder") -> None:
    """Raise :class:`~msdm.errors.OutputExistsError` unless the existing folder ``path`` holds only what msdm
    wrote there (an empty folder or a missing path is fine)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        raise OutputExistsError(f"{option} {path} is a file, not a folder: give a folder path (nothing was written)")
    if not path.exists() or _is_empty_dir(path):
        return
    foreign = foreign_files(path)
    if foreign is None:
        raise OutputExistsError(f"{option} {path} is a folder msdm did not write (no {OUTPUT_MARKER}): it is left "
                                "as it is; choose a new folder, or empty it yourself")
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" (+{len(foreign) - 3} more)" if len(foreign) > 3 else "")
        raise OutputExistsError(f"{option} {path} holds files msdm did not write ({shown}): it is left as it is; "
                                "move them out or choose a new folder")


def check_output_dir(path: str | os.PathLike, overwrite: bool = False, option: str = "--out") -> Path:
    """The policy of every command that writes a folder, checked before any work: ``path`` must be new or empty;
    with ``overwrite`` it may also be a folder that holds only what msdm wrote (it will be replaced)."""
    path = Path(path)
    if path.is_symlink() or path.is_file():
        raise OutputExistsError(f"{option} {path} is a file, not a folder: give a folder path (nothing was written)")
    if path.exists() and not _is_empty_dir(path):
        if not overwrite:
            raise OutputExistsError(f"{option} {path} exists and is not empty: choose a new folder, or add "
                                    "--overwrite to replace it (only a folder msdm wrote is replaced)")
        check_replaceable(path, option)
    return path


def write_output_marker(folder: str | os.PathLike, complete: bool = True, **info) -> None:
    """List every file of ``folder`` as written by msdm (:data:`OUTPUT_MARKER`), with ``info`` (who wrote it).
    ``complete=False``: msdm claims the (empty) folder and is writing into it."""
    from msdm import __version__

    folder = Path(folder)
    record = {"written_by": "msdm", "msdm_version": __version__, **info, "complete": complete,
              "files": [f for f in _files(folder) if f != OUTPUT_MARKER] if complete else []}
    write_json(folder / OUTPUT_MARKER, record)


def claim_output_dir(path: str | os.PathLike, overwrite: bool = False, option: str = "--out", **info) -> Path:
    """For a command that writes a folder bit by bit (not atomically): apply :func:`check_output_dir`, replace a
    folder msdm wrote when ``overwrite``, create the folder and mark it as being written by msdm. Call
    :func:`write_output_marker` on it when done."""
    path = check_output_dir(path, overwrite, option)
    if path.is_dir() and any(path.iterdir()):
        shutil.rmtree(path)  # check_output_dir made sure everything in it is msdm's
    path.mkdir(parents=True, exist_ok=True)
    write_output_marker(path, complete=False, **info)
    return path


@contextlib.contextmanager
def atomic_directory(final: str | os.PathLike, overwrite: bool = True, private=()):
    """Yield a fresh temporary folder next to ``final``; on success it becomes ``final``.

    On an exception the temporary folder is removed and ``final`` is untouched. With ``overwrite`` an existing
    ``final`` is replaced (moved aside first, deleted after the new folder is in place) — but only a folder that
    holds nothing msdm did not write (:func:`check_replaceable`): anything else is refused, before the work starts
    and again before the swap. The folder and everything written into it get the umask's permissions before the
    rename (:func:`publish_permissions`), except the files named in ``private`` (relative paths), which get 0600.
    The published folder lists its files in :data:`OUTPUT_MARKER`.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not overwrite and not _is_empty_dir(final):
        raise OutputExistsError(f"{final} exists (pass overwrite=True to replace it)")
    check_replaceable(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    try:
        yield tmp
        write_output_marker(tmp)
        check_replaceable(final)  # someone may have put a file there while we worked
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
