"""``--ckpt_path last`` / ``--ckpt_path auto``: resume the newest run of the *same experiment*.

Lightning resolves ``ckpt_path="last"`` inside the checkpoint folder of the run being started — with a versioned
logger (every shipped config: ``runs/<name>/version_N``) that is a brand-new ``version_N+1`` folder, so it finds
nothing, warns, and trains from scratch. Here the keyword is resolved before the Trainer exists, from the config:

* where checkpoints go: a checkpoint callback's ``dirpath`` if the config sets one; else the first logger's
  ``<save_dir>/<name>/<version>/checkpoints`` (``logger: true`` = ``<default_root_dir>/lightning_logs``); else
  ``<default_root_dir>/checkpoints``;
* which run: the logger's fixed ``version`` if the config names one, otherwise the highest ``version_N`` that holds a
  ``last*.ckpt``; that version is then pinned in the config, so logs, ``config.yaml`` and new checkpoints continue in
  the same folder (the resumed ``ModelCheckpoint`` keeps writing ``last.ckpt``, not ``last-v1.ckpt``);
* the newest ``last*.ckpt`` there (by modification time, as Lightning picks).

``last`` fails loudly (exit code 2, naming where it looked) when there is no such checkpoint; ``auto`` starts a new
run then (what a requeued SLURM job wants on its first start). The chosen file, its epoch and global step are printed.

Nothing is trusted blindly: a zero-byte or truncated ``last.ckpt`` is named in a warning and the newest intact
checkpoint beside it is used instead; a resumed run's folder is locked (two resumes at once would write into one
folder); ``--ckpt_path RUN_DIR`` or ``-c RUN_DIR/config.yaml`` resumes that very run. What the resumed run is
trained *with* is checked against the run's own record by :mod:`lightning_modules.run_record`.
"""

from __future__ import annotations

import os
import re
import socket
import sys
from dataclasses import dataclass
from pathlib import Path

from msdm.errors import InputError

KEYWORDS = ("last", "auto")
_LAST = re.compile(r"^last(-v\d+)?\.ckpt$")
_VERSION = re.compile(r"^version_(\d+)$")


def _get(ns, key, default=None):
    if ns is None:
        return default
    if isinstance(ns, dict):
        return ns.get(key, default)
    return getattr(ns, key, default) if not hasattr(ns, "get") else ns.get(key, default)


def _last_files(folder: Path) -> list[Path]:
    if not folder.is_dir():
        return []
    return [p for p in folder.iterdir() if p.is_file() and _LAST.match(p.name)]


def _checkpoint_dirpath(trainer_cfg) -> str | None:
    for cb in _get(trainer_cfg, "callbacks") or []:
        cls = str(_get(cb, "class_path", "") or "")
        if cls.rsplit(".", 1)[-1] in ("ModelCheckpoint", "ResumableCheckpoint"):
            dirpath = _get(_get(cb, "init_args"), "dirpath")
            if dirpath:
                return str(dirpath)
    return None


def _logger_cfg(trainer_cfg):
    """(init_args namespace or None, save_dir, name, version) of the first logger; None when there is no logger."""
    logger = _get(trainer_cfg, "logger", None)
    root = str(_get(trainer_cfg, "default_root_dir") or ".")
    if isinstance(logger, (list, tuple)):
        logger = logger[0] if logger else False
    if logger is None or logger is True:  # Lightning's default TensorBoardLogger
        return None, root, "lightning_logs", None
    if logger is False:
        return False
    args = _get(logger, "init_args")
    save_dir = _get(args, "save_dir") or root
    name = _get(args, "name", "lightning_logs")
    return args, str(save_dir), "" if name is None else str(name), _get(args, "version")


def _pinned_version(sub_cfg, base: Path, run_dir: Path | None) -> int | str | None:
    """The version folder the user pointed at: ``--ckpt_path RUN_DIR`` or ``-c RUN_DIR/config.yaml`` (the run's own
    saved config names its run; without this, ``last`` would pick the experiment's newest version instead)."""
    candidates = [run_dir] if run_dir is not None else []
    configs = _get(sub_cfg, "config") or []
    candidates += [Path(str(c)).parent for c in (configs if isinstance(configs, (list, tuple)) else [configs])
                   if Path(str(c)).name == "config.yaml"]
    for folder in candidates:
        try:
            if folder.resolve().parent == base.resolve():
                m = _VERSION.match(folder.name)
                return int(m.group(1)) if m else folder.name
        except OSError:
            continue
    return None


def find_checkpoint_folder(sub_cfg, run_dir: Path | None = None) -> tuple[Path | None, int | None, str]:
    """``(folder holding the run's checkpoints, version number to pin or None, where it looked)``.

    The folder is None when no run has a ``last`` checkpoint."""
    trainer_cfg = _get(sub_cfg, "trainer")
    dirpath = _checkpoint_dirpath(trainer_cfg)
    if dirpath:
        return Path(dirpath), None, f"{dirpath}/last*.ckpt"
    logger = _logger_cfg(trainer_cfg)
    if logger is False:
        root = Path(str(_get(trainer_cfg, "default_root_dir") or "."))
        return root / "checkpoints", None, f"{root / 'checkpoints'}/last*.ckpt"
    _, save_dir, name, version = logger
    base = Path(save_dir) / name if name else Path(save_dir)
    pinned = _pinned_version(sub_cfg, base, run_dir)
    if pinned is not None:
        version = pinned
    elif run_dir is not None:
        raise InputError(f"{run_dir} is not a run of this experiment (its runs are {base}/version_*): drop -c, or "
                         f"give the config of that run")
    if version is not None:
        folder = base / (f"version_{version}" if isinstance(version, int) else str(version)) / "checkpoints"
        return folder, (version if pinned is not None else None), f"{folder}/last*.ckpt"
    versions = sorted(((int(m.group(1)), p) for p in (base.iterdir() if base.is_dir() else [])
                       if p.is_dir() and (m := _VERSION.match(p.name))), reverse=True)
    for number, folder in versions:
        if _last_files(folder / "checkpoints"):
            return folder / "checkpoints", number, f"{base}/version_*/checkpoints/last*.ckpt"
    return None, None, f"{base}/version_*/checkpoints/last*.ckpt"


def read_checkpoint_meta(path: Path) -> dict:
    """``{"epoch", "global_step"}`` of a checkpoint; raises what torch raises for a zero-byte or truncated file."""
    import torch

    if path.stat().st_size == 0:
        raise ValueError("zero bytes")
    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    return {"epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step")}


def pick_checkpoint(folder: Path) -> tuple[Path | None, dict, list[str]]:
    """The newest ``last*.ckpt`` that loads; if none does, the newest intact ``*.ckpt`` beside it.

    Returns ``(path or None, its meta, warnings)``: a zero-byte or truncated ``last.ckpt`` (a disk that filled up,
    a copy cut short) is named in a warning, never silently used nor silently skipped."""
    if not folder.is_dir():
        return None, {}, []
    lasts = sorted(_last_files(folder), key=lambda p: p.stat().st_mtime, reverse=True)
    others = sorted((p for p in folder.iterdir() if p.is_file() and p.suffix == ".ckpt" and p not in lasts),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    warnings = []
    for path in lasts + others:
        try:
            meta = read_checkpoint_meta(path)
        except Exception as e:  # noqa: BLE001 - any unreadable file is reported and skipped
            reason = str(e).splitlines()[0] if str(e) else type(e).__name__
            warnings.append(f"{path} is unreadable ({reason[:120]})")
            continue
        if warnings:
            warnings.append(f"falling back to the newest intact checkpoint {path.name} (global step "
                            f"{meta.get('global_step')})")
        return path, meta, warnings
    return None, {}, warnings


def find_last_checkpoint(sub_cfg, run_dir: Path | None = None) -> tuple[Path | None, int | None, str]:
    """``(newest intact last checkpoint or None, version number to pin or None, where it looked)``."""
    folder, version, where = find_checkpoint_folder(sub_cfg, run_dir)
    path = pick_checkpoint(folder)[0] if folder is not None else None
    return path, version, where


def _say(msg: str) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(msg, file=sys.stderr, flush=True)


@dataclass
class Resumed:
    """What ``--ckpt_path last|auto|RUN_DIR`` resolved to."""

    path: Path          # the checkpoint file
    run_dir: Path       # the run's folder (version_N; the checkpoint folder's parent)
    global_step: int    # of the checkpoint: logs of later steps belong to an abandoned continuation
    pinned: bool        # the logger was pinned to run_dir (fit): logs and config continue there


def resolve_ckpt_keyword(sub_cfg, subcommand: str = "fit", run_dir: Path | None = None) -> Resumed | None:
    """Replace ``ckpt_path: last|auto`` in ``sub_cfg`` by a file (or ``None`` for ``auto`` without one), in place.

    ``run_dir`` (``--ckpt_path RUN_DIR``): resume that run rather than the experiment's newest. For ``fit`` the
    run's folder is locked for the life of this process (:func:`lock_run_dir`)."""
    keyword = _get(sub_cfg, "ckpt_path")
    if keyword not in KEYWORDS:
        return None
    folder, version, where = find_checkpoint_folder(sub_cfg, run_dir)
    path, meta, warnings = pick_checkpoint(folder) if folder is not None else (None, {}, [])
    for w in warnings:
        _say(f"msdm {subcommand}: warning: {w}")
    if path is None:
        if keyword == "last":
            _say(f"msdm {subcommand}: --ckpt_path last: no checkpoint to resume from (looked for {where}). Drop "
                 "--ckpt_path to start a new run, pass a checkpoint file, or use --ckpt_path auto (resume if one "
                 "exists, else start fresh).")
            raise SystemExit(2)
        _say(f"msdm {subcommand}: --ckpt_path auto: no checkpoint yet ({where}): starting a new run")
        sub_cfg.ckpt_path = None
        return None
    sub_cfg.ckpt_path = str(path)
    where_logs = ""
    pinned = False
    if version is not None and subcommand == "fit":
        args, *_ = _logger_cfg(_get(sub_cfg, "trainer"))
        if args is not None:
            args.version = version  # continue logging (and checkpointing) in the resumed run's folder
            pinned = True
            where_logs = f"; logs and checkpoints continue in version_{version}"
        else:
            _say(f"msdm {subcommand}: the default logger cannot be pinned to version_{version}: set "
                 "trainer.logger explicitly to keep writing into the resumed run's folder")
    elif subcommand == "fit" and _VERSION.match(path.parent.parent.name):
        pinned = _logger_cfg(_get(sub_cfg, "trainer")) not in (False, None)
    resumed = Resumed(path=path, run_dir=path.parent.parent, global_step=int(meta.get("global_step") or 0),
                      pinned=pinned)
    if subcommand == "fit":
        lock_run_dir(resumed.run_dir if pinned else path.parent)
    _say(f"msdm {subcommand}: resuming from {path} (epoch {meta.get('epoch')}, global step "
         f"{meta.get('global_step')}){where_logs}")
    return resumed


_LOCKS: dict[str, object] = {}  # open lock files, held until the process exits (the OS releases them then)


def _is_launching_rank() -> bool:
    """Global rank 0 of the job, known before any Trainer exists (launchers set these variables for other ranks)."""
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0 and os.environ.get("NODE_RANK", "0") in ("", "0") \
        and os.environ.get("GROUP_RANK", "0") in ("", "0")


def lock_run_dir(folder: Path) -> None:
    """Take an exclusive lock on ``folder`` (``.msdm.lock``) for this process, or fail in one line.

    Two resumes of one run at once would append to one ``metrics.csv``, race on ``last.ckpt`` and interleave two
    trainings' logs. ``flock`` is released by the OS when the process dies however it dies (kill -9 included), so a
    stale lock never blocks a later resume. Only the job's rank 0 locks (the other ranks of a DDP run are its own
    processes)."""
    import fcntl

    if not _is_launching_rank() or str(folder) in _LOCKS:
        return
    folder.mkdir(parents=True, exist_ok=True)
    f = open(folder / ".msdm.lock", "a+")  # noqa: SIM115 - held open on purpose
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "another process"
        f.close()
        raise InputError(f"{folder} is being trained by {holder}: wait for it to finish (or stop it) before "
                         "resuming this run again") from None
    f.seek(0)
    f.truncate()
    f.write(f"msdm fit (pid {os.getpid()} on {socket.gethostname()})\n")
    f.flush()
    _LOCKS[str(folder)] = f
