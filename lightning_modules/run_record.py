"""The record of a run stays true across resumes: its config, its metrics history.

* **The config a run was trained with** is ``version_N/config.yaml`` (LightningCLI writes it at the start). A resume
  (``--ckpt_path last|auto|RUN_DIR``) is compared with it key by key (:func:`config_changes`): a resume that would
  train on other data, another batch size, ``max_steps``, ... is refused, naming the differences and the two ways
  on (resume with the run's own config, ``-c RUN_DIR/config.yaml``; or ``--resume-with-changes``). Lightning would
  silently train on with whatever was passed and overwrite ``config.yaml`` with it.
* **The record is never overwritten** (:class:`RunConfigRecorder`): a resume with the same config writes nothing; a
  resume with allowed changes writes ``config-resume-K.yaml`` next to the untouched ``config.yaml``.
* **metrics.csv keeps its history** (:class:`ResumedCSVWriter`): Lightning's CSV writer deletes ``metrics.csv`` when
  its folder is reused, so a resumed run kept only the rows after the resume point. Here the rows before the
  checkpoint's step stay and new rows are appended; rows logged *after* the checkpoint (by the continuation that
  was interrupted and is now redone) move to ``metrics-abandoned-step<G>.csv`` rather than mix with the redo.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

import yaml
from lightning.pytorch.cli import SaveConfigCallback
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from msdm.errors import InputError
from msdm.io import write_text

# Keys that differ between a run and its resume by construction (the checkpoint chosen, the config files named,
# the logger version pinned to the run's folder, our own flag).
IGNORED = ("ckpt_path", "config", "trainer.logger.init_args.version", "resume_with_changes")
CONFIG_FILE = "config.yaml"


def _flatten(obj, prefix: str = "") -> dict:
    if isinstance(obj, dict):
        out = {}
        for k, v in obj.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    if isinstance(obj, list) and obj and any(isinstance(v, (dict, list)) for v in obj):
        out = {}
        for i, v in enumerate(obj):
            out.update(_flatten(v, f"{prefix}[{i}]"))
        return out
    return {prefix: obj}


def _ignored(key: str) -> bool:
    return any(key == k or key.startswith(k + ".") or key.startswith(k + "[") for k in IGNORED)


def config_changes(saved: dict, current: dict) -> list[tuple[str, object, object]]:
    """``[(key, saved value, current value)]`` for every setting that differs (:data:`IGNORED` aside)."""
    a, b = _flatten(saved or {}), _flatten(current or {})
    missing = object()
    out = []
    for key in sorted(set(a) | set(b)):
        if _ignored(key):
            continue
        va, vb = a.get(key, missing), b.get(key, missing)
        if va != vb:
            out.append((key, None if va is missing else va, None if vb is missing else vb))
    return out


def describe_changes(changes, limit: int = 4) -> str:
    shown = ", ".join(f"{k}: {_short(a)} -> {_short(b)}" for k, a, b in changes[:limit])
    return shown + (f" (+{len(changes) - limit} more)" if len(changes) > limit else "")


def _short(v) -> str:
    text = repr(v) if not isinstance(v, str) else v
    return text if len(text) <= 60 else text[:57] + "..."


def check_resume_config(run_dir: Path, current: dict, allow_changes: bool) -> list:
    """Refuse (:class:`~msdm.errors.InputError`) a resume whose config differs from ``run_dir/config.yaml``,
    unless ``allow_changes``; return the changes (empty when there is no record to compare with)."""
    record = run_dir / CONFIG_FILE
    if not record.is_file():
        return []
    saved = yaml.safe_load(record.read_text()) or {}
    changes = config_changes(saved, current)
    if changes and not allow_changes:
        raise InputError(
            f"{run_dir} was trained with another config ({describe_changes(changes)}). Resume it as it was: "
            f"msdm fit -c {record} --ckpt_path last; or train on with the new values: add --resume-with-changes "
            "(recorded in config-resume-K.yaml; config.yaml is kept)")
    return changes


def _same_config(path: Path, text: str) -> bool:
    try:
        return not config_changes(yaml.safe_load(path.read_text()) or {}, yaml.safe_load(text) or {})
    except (OSError, yaml.YAMLError):
        return False


def record_path(log_dir: Path, text: str) -> Path | None:
    """Where to record the config ``text`` in ``log_dir``: ``config.yaml`` for a new run, nothing when the run's
    record already says the same, else the first free ``config-resume-K.yaml`` (never overwriting a record)."""
    first = log_dir / CONFIG_FILE
    if not first.exists():
        return first
    if _same_config(first, text):
        return None
    k = 1
    while (log_dir / f"config-resume-{k}.yaml").exists():
        if _same_config(log_dir / f"config-resume-{k}.yaml", text):
            return None
        k += 1
    return log_dir / f"config-resume-{k}.yaml"


class RunConfigRecorder(SaveConfigCallback):
    """LightningCLI's config saver that never overwrites a run's record (module docstring)."""

    def setup(self, trainer, pl_module, stage: str) -> None:
        if self.already_saved:
            return
        log_dir = trainer.log_dir  # broadcast by Lightning
        if trainer.is_global_zero and log_dir is not None:
            text = self.parser.dump(self.config, skip_none=False)
            target = record_path(Path(log_dir), text)
            if target is not None:
                write_text(target, text)
            self.save_config(trainer, pl_module, stage)
        self.already_saved = trainer.strategy.broadcast(True)


class ResumedCSVWriter(ExperimentWriter):
    """Lightning's CSV writer for a resumed run's folder: keeps ``metrics.csv`` (module docstring)."""

    def __init__(self, log_dir: str, resume_step: int):
        self.resume_step = int(resume_step)
        super().__init__(log_dir)

    def _check_log_dir_exists(self) -> None:  # Lightning's deletes metrics.csv here
        path = Path(self.metrics_file_path)
        if not path.is_file():
            return
        with open(path, newline="") as f:
            reader = csv.DictReader(f)
            keys = list(reader.fieldnames or [])
            rows = list(reader)

        def step(row) -> float:
            try:
                return float(row.get("step") or "nan")
            except ValueError:
                return float("nan")

        kept = [r for r in rows if not step(r) >= self.resume_step]
        later = [r for r in rows if step(r) >= self.resume_step]
        if later:
            with open(path.with_name(f"metrics-abandoned-step{self.resume_step}.csv"), "a", newline="") as f:
                w = csv.DictWriter(f, fieldnames=keys)
                if f.tell() == 0:
                    w.writeheader()
                w.writerows(later)
        tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        with open(tmp, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=sorted(keys))
            w.writeheader()
            w.writerows(kept)
        os.replace(tmp, path)
        self.metrics_keys = sorted(keys)  # new rows are appended under the same header (extended if they add keys)


def keep_csv_history(trainer, resume_step: int, run_dir: Path) -> None:
    """Give every CSVLogger of ``trainer`` that writes into ``run_dir`` a :class:`ResumedCSVWriter`."""
    from lightning.pytorch.loggers import CSVLogger

    for logger in trainer.loggers:
        if isinstance(logger, CSVLogger) and Path(logger.log_dir).resolve() == run_dir.resolve():
            # the logger creates its writer lazily (and only on rank 0 is it ever used); give it ours first
            logger._experiment = ResumedCSVWriter(logger.log_dir, resume_step)
