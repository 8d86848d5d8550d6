"""Loading pretrained weights by hub id or local folder, with errors that name the offline fix.

Every ``from_pretrained`` in msdm goes through :func:`pretrained_source` so that

* a local folder is used as is (``local_files_only`` is implied: nothing is downloaded for a path);
* a string that looks like a path (:func:`looks_like_path`: it starts with ``/``, ``.`` or ``~``, has more than one
  ``/`` or an OS separator, ends in a file suffix, or its first component exists here) but does not exist raises
  "folder not found" with the absolute path — it is never looked up on the hub, so a typo in ``runs/vae`` does not
  become a download hint for a repository called ``runs/vae``;
* a hub id is loaded from the Hugging Face cache, downloading only when the user allows it
  (``HF_HUB_OFFLINE`` unset and ``local_files_only=False``);
* a failure says which id was asked for and how to make it available offline, instead of a 20-line
  ``OSError``/``LocalEntryNotFoundError`` trace or a connection retry loop;
* ``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path

from msdm.errors import UserError


class MissingWeightsError(UserError, RuntimeError):
    """Raised when pretrained weights are neither a local folder nor in the local Hugging Face cache, or when a
    local path given for them does not exist. The message names the fix (and is all the ``msdm`` command prints)."""


# A Hugging Face repository id: ``name`` or ``namespace/name`` (letters, digits, ``-``, ``_``, ``.``).
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")
# Suffixes of files people pass where a folder or id is expected: never a hub id.
_FILE_SUFFIXES = (".ckpt", ".pt", ".pth", ".bin", ".safetensors", ".json", ".jsonl", ".csv", ".tsv", ".txt",
                  ".parquet", ".yaml", ".yml", ".png", ".jpg", ".jpeg", ".zip", ".tar", ".gz")


def is_local(name_or_path: str | os.PathLike) -> bool:
    return Path(os.path.expanduser(str(name_or_path))).exists()


def looks_like_path(name_or_path: str | os.PathLike) -> bool:
    """True for strings that can only be meant as a local path, so a miss must not be looked up on the hub.

    A path object; anything starting with ``/``, ``.`` or ``~``; an OS-specific separator (``\\`` on Windows); more
    than one ``/`` (a hub id has at most ``namespace/name``); a file suffix (``.ckpt``, ``.csv``, ...); a string that
    is not a valid repository id (spaces, ``:``); or a ``a/b`` whose first component exists here ("exists partially":
    ``data/kvasri`` when ``data/`` is a folder).
    """
    if isinstance(name_or_path, os.PathLike):
        return True
    s = str(name_or_path)
    if not s:
        return False
    if s.startswith(("/", ".", "~")) or (os.sep != "/" and os.sep in s) or (os.altsep and os.altsep != "/"
                                                                           and os.altsep in s):
        return True
    if s.count("/") > 1 or s.lower().endswith(_FILE_SUFFIXES) or not _HUB_ID.match(s):
        return True
    return "/" in s and Path(s.split("/", 1)[0]).exists()


def local_not_found(name_or_path: str | os.PathLike, what: str = "weights") -> str:
    """The message for a local path that does not exist: the absolute path and the nearest folder that does."""
    given = str(name_or_path)
    p = Path(os.path.expanduser(given)).absolute()
    parent = next((q for q in p.parents if q.exists()), None)
    near = f"; {parent} exists" if parent is not None and parent != p.parent else (
        f"; {p.parent} exists but has no {p.name!r}" if parent == p.parent else "")
    return (f"{what}: folder not found: {p} (given as {given!r}{near}). A path is never looked up on the Hugging Face "
            f"hub: check the spelling and the working directory.")


def check_local_path(name_or_path: str | os.PathLike, what: str = "weights") -> None:
    """Raise :class:`MissingWeightsError` ("folder not found") for a path-looking string that does not exist."""
    if not is_local(name_or_path) and looks_like_path(name_or_path):
        raise MissingWeightsError(local_not_found(name_or_path, what))


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve(name_or_path: str | os.PathLike, local_files_only: bool | None = None,
            what: str = "weights") -> tuple[str, bool]:
    """Return ``(path_or_id, local_files_only)`` for a ``from_pretrained`` call.

    ``local_files_only=None`` means: True for local folders and in offline mode, else False. A path-looking string
    that does not exist raises :class:`MissingWeightsError` "folder not found" (``what`` names the thing).
    """
    s = os.path.expanduser(str(name_or_path))
    if is_local(s):
        return s, True
    check_local_path(name_or_path, what)
    if local_files_only is None:
        local_files_only = offline_mode()
    return s, bool(local_files_only)


def offline_fix(name: str, what: str = "weights", repo_type: str | None = None) -> str:
    """Two lines: what is missing, and the command that makes it available offline."""
    kind = f" --repo-type {repo_type}" if repo_type else ""
    return (
        f"could not load {what} '{name}': not a local folder and not in the Hugging Face cache (hub unreachable or "
        f"HF_HUB_OFFLINE=1).\nFix: on a machine with network run `huggingface-cli download {name}{kind} --local-dir "
        f"DIR`, copy DIR here and pass its path instead of the hub id (or point HF_HOME at a cache that holds it)."
    )


@contextlib.contextmanager
def pretrained_source(name_or_path: str | os.PathLike, what: str = "weights"):
    """Context manager that turns loader failures for ``name_or_path`` into a :class:`MissingWeightsError`.

    Only errors that mean "not found / not reachable" are translated; a corrupt file or a config error is re-raised
    unchanged so its own message is not hidden.
    """
    try:
        yield
    except MissingWeightsError:
        raise
    except (OSError, ValueError, EnvironmentError) as e:  # noqa: UP024 - transformers raises OSError subclasses
        msg = str(e)
        not_found = any(
            k in msg
            for k in (
                "does not appear to have",
                "We couldn't connect",
                "couldn't connect",
                "not a local folder",
                "is not a valid model identifier",
                "Can't load",
                "cannot find the requested files",
                "LocalEntryNotFoundError",
                "offline mode",
                "outgoing traffic has been disabled",
                "No such file or directory",
                "Repo id must",
                "not found in the cache",
            )
        ) or type(e).__name__ in ("LocalEntryNotFoundError", "RepositoryNotFoundError", "HFValidationError")
        if not_found and not is_local(name_or_path):
            if looks_like_path(name_or_path):
                raise MissingWeightsError(local_not_found(name_or_path, what)) from e
            raise MissingWeightsError(offline_fix(str(name_or_path), what)) from e
        raise
