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
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

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


def _newest(files: list[Path]) -> Path | None:
    return max(files, key=lambda p: p.stat().st_mtime) if files else None


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


def find_last_checkpoint(sub_cfg) -> tuple[Path | None, int | None, str]:
    """``(newest last checkpoint or None, version number to pin or None, where it looked)`` for a subcommand config."""
    trainer_cfg = _get(sub_cfg, "trainer")
    dirpath = _checkpoint_dirpath(trainer_cfg)
    if dirpath:
        return _newest(_last_files(Path(dirpath))), None, f"{dirpath}/last*.ckpt"
    logger = _logger_cfg(trainer_cfg)
    if logger is False:
        root = Path(str(_get(trainer_cfg, "default_root_dir") or "."))
        return _newest(_last_files(root / "checkpoints")), None, f"{root / 'checkpoints'}/last*.ckpt"
    _, save_dir, name, version = logger
    base = Path(save_dir) / name if name else Path(save_dir)
    if version is not None:
        folder = base / (f"version_{version}" if isinstance(version, int) else str(version)) / "checkpoints"
        return _newest(_last_files(folder)), None, f"{folder}/last*.ckpt"
    versions = sorted(((int(m.group(1)), p) for p in (base.iterdir() if base.is_dir() else [])
                       if p.is_dir() and (m := _VERSION.match(p.name))), reverse=True)
    for number, folder in versions:
        found = _newest(_last_files(folder / "checkpoints"))
        if found is not None:
            return found, number, f"{base}/version_*/checkpoints/last*.ckpt"
    return None, None, f"{base}/version_*/checkpoints/last*.ckpt"


def _say(msg: str) -> None:
    from lightning.fabric.utilities.rank_zero import rank_zero_only

    if getattr(rank_zero_only, "rank", 0) == 0:
        print(msg, file=sys.stderr, flush=True)


def resolve_ckpt_keyword(sub_cfg, subcommand: str = "fit") -> None:
    """Replace ``ckpt_path: last|auto`` in ``sub_cfg`` by a file (or ``None`` for ``auto`` without one), in place."""
    keyword = _get(sub_cfg, "ckpt_path")
    if keyword not in KEYWORDS:
        return
    path, version, where = find_last_checkpoint(sub_cfg)
    if path is None:
        if keyword == "last":
            _say(f"msdm {subcommand}: --ckpt_path last: no checkpoint to resume from (looked for {where}). Drop "
                 "--ckpt_path to start a new run, pass a checkpoint file, or use --ckpt_path auto (resume if one "
                 "exists, else start fresh).")
            raise SystemExit(2)
        _say(f"msdm {subcommand}: --ckpt_path auto: no checkpoint yet ({where}): starting a new run")
        sub_cfg.ckpt_path = None
        return
    import torch

    ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    sub_cfg.ckpt_path = str(path)
    where_logs = ""
    if version is not None and subcommand == "fit":
        args, *_ = _logger_cfg(_get(sub_cfg, "trainer"))
        if args is not None:
            args.version = version  # continue logging (and checkpointing) in the resumed run's folder
            where_logs = f"; logs and checkpoints continue in version_{version}"
        else:
            _say(f"msdm {subcommand}: the default logger cannot be pinned to version_{version}: set "
                 "trainer.logger explicitly to keep writing into the resumed run's folder")
    _say(f"msdm {subcommand}: resuming from {path} (epoch {ckpt.get('epoch')}, global step "
         f"{ckpt.get('global_step')}){where_logs}")
