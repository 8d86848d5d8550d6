"""Loading pretrained weights by hub id or local folder, with errors that name the offline fix.

Every ``from_pretrained`` in msdm goes through :func:`pretrained_source` so that

* a local folder is used as is (``local_files_only`` is implied: nothing is downloaded for a path);
* a hub id is loaded from the Hugging Face cache, downloading only when the user allows it
  (``HF_HUB_OFFLINE`` unset and ``local_files_only=False``);
* a failure says which id was asked for and how to make it available offline, instead of a 20-line
  ``OSError``/``LocalEntryNotFoundError`` trace or a connection retry loop;
* ``trust_remote_code`` stays off unless the caller turns it on.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path


class MissingWeightsError(RuntimeError):
    """Raised when pretrained weights are neither a local folder nor in the local Hugging Face cache."""


def is_local(name_or_path: str | os.PathLike) -> bool:
    return Path(os.path.expanduser(str(name_or_path))).exists()


def offline_mode() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes") or os.environ.get(
        "TRANSFORMERS_OFFLINE", "0"
    ).lower() in ("1", "true", "yes")


def resolve(name_or_path: str | os.PathLike, local_files_only: bool | None = None) -> tuple[str, bool]:
    """Return ``(path_or_id, local_files_only)`` for a ``from_pretrained`` call.

    ``local_files_only=None`` means: True for local folders and in offline mode, else False.
    """
    s = os.path.expanduser(str(name_or_path))
    if is_local(s):
        return s, True
    if local_files_only is None:
        local_files_only = offline_mode()
    return s, bool(local_files_only)


def offline_fix(name: str, what: str = "weights") -> str:
    return (
        f"Could not load {what} '{name}': it is not a local folder and not in the Hugging Face cache "
        f"(the hub may be unreachable or HF_HUB_OFFLINE=1 is set). To use it offline, on a machine with network run\n"
        f"    huggingface-cli download {name} --local-dir /path/to/{name.split('/')[-1]}\n"
        f"copy that folder here and pass its path instead of the hub id (or point HF_HOME at a cache that holds it)."
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
            raise MissingWeightsError(offline_fix(str(name_or_path), what)) from e
        raise
