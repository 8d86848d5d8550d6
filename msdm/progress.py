"""One way to show progress on long work: a tqdm bar (tqdm comes with diffusers and transformers).

Used by ``msdm generate`` (images), ``msdm cache`` (batches per split), feature extraction (``msdm evaluate``,
``msdm annotate report``) and the ``SampleGrid`` callback. ``msdm --quiet`` (or ``MSDM_QUIET=1``) turns every bar
off; a notebook can call :func:`set_enabled`. Bars write to stderr, so redirected stdout stays clean, and they are
left in place when done only for work the user started by name (``leave=True``), not for nested steps.
"""

from __future__ import annotations

import contextlib
import os
import sys

_enabled = os.environ.get("MSDM_QUIET", "").strip().lower() not in ("1", "true", "yes", "on")


def is_enabled() -> bool:
    return _enabled


def set_enabled(flag: bool) -> None:
    """Turn msdm's progress bars on or off for this process."""
    global _enabled
    _enabled = bool(flag)


@contextlib.contextmanager
def enabled(flag: bool):
    """Progress bars on/off for a block (``msdm --quiet`` runs its command inside ``enabled(False)``).

    Off also silences the bars of the Hugging Face libraries ("Loading pipeline components", "Loading weights") for
    the block, and puts their previous state back after it.
    """
    old = is_enabled()
    set_enabled(flag)
    restore = _silence_hf() if not flag else None
    try:
        yield
    finally:
        set_enabled(old)
        if restore is not None:
            restore()


def _silence_hf():
    """Turn off huggingface_hub / diffusers / transformers bars (imported now or later); return the undo."""
    env_key = "HF_HUB_DISABLE_PROGRESS_BARS"  # read by the libraries when they are imported
    old_env = os.environ.get(env_key)
    os.environ[env_key] = "1"
    undo = []
    for name in ("diffusers", "transformers"):
        mod = sys.modules.get(f"{name}.utils.logging")
        if mod is not None and mod.is_progress_bar_enabled():
            mod.disable_progress_bar()
            undo.append(mod.enable_progress_bar)
    hub = sys.modules.get("huggingface_hub.utils")
    if hub is not None and not hub.are_progress_bars_disabled():
        hub.disable_progress_bars()
        undo.append(hub.enable_progress_bars)

    def restore():
        if old_env is None:
            os.environ.pop(env_key, None)
        else:
            os.environ[env_key] = old_env
        for f in undo:
            f()

    return restore


def progress_bar(iterable=None, *, total: int | None = None, desc: str | None = None, unit: str = "it",
                 leave: bool = True, disable: bool = False, **kwargs):
    """A ``tqdm`` bar over ``iterable`` (or a manual one: ``update(n)``), off when progress is disabled.

    ``disable`` turns it off for this call only (e.g. a Trainer run without a progress bar).
    """
    from tqdm import tqdm

    kwargs.setdefault("dynamic_ncols", True)
    return tqdm(iterable, total=total, desc=desc, unit=unit, leave=leave, disable=disable or not _enabled, **kwargs)


class ProgressIterable:
    """``iterable`` (e.g. a DataLoader) that shows a bar on every pass over it; every other attribute (``dataset``,
    ``sampler``, ``len()``) is the wrapped object's, so code that inspects the loader works unchanged."""

    def __init__(self, iterable, desc: str, unit: str = "batch"):
        self._inner, self._desc, self._unit, self._passes = iterable, desc, unit, 0

    def __iter__(self):
        self._passes += 1
        try:
            total = len(self._inner)
        except TypeError:
            total = None
        desc = self._desc if self._passes == 1 else f"{self._desc} (pass {self._passes})"
        yield from progress_bar(self._inner, total=total, desc=desc, unit=self._unit)

    def __len__(self):
        return len(self._inner)

    def __getattr__(self, name):
        if name.startswith("__") or name in ("_inner", "_desc", "_unit", "_passes"):
            raise AttributeError(name)
        return getattr(self._inner, name)
