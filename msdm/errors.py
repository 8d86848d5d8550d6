"""The errors a user can act on: a path that does not exist, a file that cannot be read, an option that does not fit.

They are not bugs, so the ``msdm`` console script prints their message — one or two lines that name the file and the
fix — and exits with status 2 instead of showing a traceback (``--debug`` or ``MSDM_DEBUG=1`` shows it). Raise one of
these, never a bare ``ValueError``, where the cause is the input; the message must say what to change. Each also
derives from the builtin exception it refines, so ``except ValueError`` / ``except FileNotFoundError`` still work.

The family: :class:`UserError` (base), :class:`InputError` (a value or file content is wrong), :class:`InputKeyError`
(an id or name is not in the data), :class:`PathNotFoundError` (a path the user gave does not exist),
:class:`OutputExistsError` (an output path holds what msdm must not replace), and, elsewhere, :class:`msdm.hub.MissingWeightsError` (pretrained weights that
are neither a local folder nor cached), :class:`msdm.data.report.BadSampleError`,
:class:`msdm.data.captions.ColumnError` and :class:`msdm.annotate.study.StudyError`.
"""

from __future__ import annotations

import errno
import os


class UserError(Exception):
    """Base of the errors whose message tells the user what to change (printed without a traceback by ``msdm``)."""


class InputError(UserError, ValueError):
    """An input file, folder or option value is unusable (corrupt image, wrong layout, undecodable table, ...)."""


class InputKeyError(UserError, KeyError):
    """A name the user gave (an id, a split, a column value) is not in the data. ``str()`` is the message alone
    (a plain ``KeyError`` would print it quoted)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class PathNotFoundError(UserError, FileNotFoundError):
    """A path the user gave does not exist. ``str()`` is the message alone (no ``[Errno 2]`` prefix)."""

    def __init__(self, message: str, path: str | os.PathLike | None = None):
        super().__init__(message)
        self.message, self.filename = message, None if path is None else str(path)

    def __str__(self) -> str:
        return self.message

    def __reduce__(self):  # DataLoader workers pickle exceptions back to the main process
        return (type(self), (self.message, self.filename))


class OutputExistsError(UserError, FileExistsError):
    """An output path holds something msdm must not replace (a file, a folder it did not write, a non-empty folder
    without ``--overwrite``). ``str()`` is the message alone."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def debug_requested() -> bool:
    """``MSDM_DEBUG=1`` (or true/yes): show full tracebacks instead of the one-line messages."""
    return os.environ.get("MSDM_DEBUG", "").strip().lower() in ("1", "true", "yes", "on")


# errno values whose fix is the user's: free space, write elsewhere, get permission.
_ENVIRONMENT = {
    errno.ENOSPC: "no space left on device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
}
# What torch's C++ writer says when a write fails (it does not keep the errno).
_TORCH_WRITE_FAILED = ("file write failed", "iostream error", "PytorchStreamWriter failed writing")


def environment_error(error: BaseException) -> UserError | None:
    """A :class:`UserError` for an exception (or one it was raised from) caused by where the output goes — a full
    disk, a read-only or forbidden folder — else None. Such an error is not a bug: ``msdm`` prints it in one line."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        code = getattr(error, "errno", None)
        if isinstance(error, OSError) and code in _ENVIRONMENT:
            where = error.filename or "the output folder"
            return UserError(f"{_ENVIRONMENT[code]} writing {where}: "
                             + ("free some space or write elsewhere (--out, trainer.default_root_dir)"
                                if code in (errno.ENOSPC, errno.EDQUOT) else "write to a folder you can write to"))
        if isinstance(error, RuntimeError) and any(t in str(error) for t in _TORCH_WRITE_FAILED):
            return UserError(f"a file could not be written ({str(error).splitlines()[0][:100]}): is the disk full? "
                             "Free some space or write elsewhere (--out, trainer.default_root_dir)")
        error = error.__cause__ or error.__context__
    return None
