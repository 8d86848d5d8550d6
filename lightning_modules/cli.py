"""``msdm fit | validate | test | predict``: LightningCLI in subclass mode for model and data.

Without ``-c``, the config is ``cli.yaml``: the one in the current directory if there is one, else the repository's
(``MSDM_CLI_CONFIG`` overrides both). With ``-c configs/<experiment>.yaml`` that file alone (plus later ``-c``
overlays and ``--model.*`` / ``--data.*`` / ``--trainer.*`` flags) is the config: LightningCLI would merge its default
config files *under* every ``-c`` file, so values of ``cli.yaml`` (its seed, ``max_epochs``, its DataModule's
arguments) leaked into every experiment that did not override them. E.g.::

    msdm fit -c configs/msdm_unet_kvasir.yaml --trainer.devices=4 --trainer.strategy=ddp

The Trainer gets :class:`~lightning_modules.progress_bar.MSDMProgressBar` (no ``v_num`` entry) unless the config
names its own progress bar or turns the bar off.

``--ckpt_path last`` resumes the newest run of the same experiment (:mod:`lightning_modules.resume`): the newest
``version_N`` of the config's logger that holds a ``last`` checkpoint, logging into that same version; it fails when
there is none. ``--ckpt_path auto`` does the same but starts a new run when there is none (for requeued jobs).
``--ckpt_path RUN_DIR`` (a ``version_N`` folder) resumes that run with its own ``config.yaml``. A resume must train
with the config the run was trained with (:mod:`lightning_modules.run_record`); ``--resume-with-changes`` lets it
differ (recorded next to the original, which is never overwritten).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import yaml
from lightning.pytorch import LightningDataModule, LightningModule
from lightning.pytorch.cli import LightningCLI

from lightning_modules.run_record import RunConfigRecorder
from msdm.errors import InputError, PathNotFoundError
from msdm.validation import Rule


def has_config_arg(argv: list[str] | None) -> bool:
    """Whether the command line names a config file (``-c`` / ``--config``)."""
    return any(a in ("-c", "--config") or a.startswith(("--config=", "-c=")) for a in (argv or []))


def default_config_files(argv: list[str] | None = None) -> list[str]:
    """``[cli.yaml]`` when no ``-c`` is given, else ``[]`` (module docstring)."""
    if has_config_arg(argv):
        return []
    env = os.environ.get("MSDM_CLI_CONFIG")
    if env:
        return [env]
    for candidate in (Path.cwd() / "cli.yaml", Path(__file__).resolve().parent.parent / "cli.yaml"):
        if candidate.is_file():
            return [str(candidate)]
    return []


class MSDMLightningCLI(LightningCLI):
    """LightningCLI with msdm's packages registered, so ``--model MSDMUNetModule`` and
    ``--data KvasirVQADataModule`` resolve without a full ``class_path``."""

    def __init__(self, *args, resume_with_changes: bool = False, run_dir: str | None = None, **kwargs):
        import datamodules  # noqa: F401 - registers the DataModule subclasses
        import lightning_modules  # noqa: F401 - registers the LightningModule subclasses

        self.resume_with_changes = resume_with_changes
        self.run_dir = Path(run_dir) if run_dir else None
        self.resumed = None  # lightning_modules.resume.Resumed once --ckpt_path last|auto|RUN_DIR found a run
        kwargs.setdefault("save_config_callback", RunConfigRecorder)  # a run's config.yaml is never overwritten
        super().__init__(*args, **kwargs)

    def parse_arguments(self, parser, args) -> None:
        """``args`` is the command line here (``msdm fit ...`` hands its own argv over, ``msdm cache`` its overrides):
        hide ``sys.argv`` while parsing, or Lightning warns on every run that both were given."""
        if args is None or len(sys.argv) <= 1:
            return super().parse_arguments(parser, args)
        argv, sys.argv = sys.argv, sys.argv[:1]
        try:
            return super().parse_arguments(parser, args)
        finally:
            sys.argv = argv

    def _instantiate_trainer(self, config, callbacks):
        from lightning.pytorch.callbacks import ProgressBar

        from lightning_modules.progress_bar import MSDMProgressBar

        own = config.get("callbacks") or []
        given = list(callbacks) + (list(own) if isinstance(own, (list, tuple)) else [own])
        if config.get("enable_progress_bar", True) is not False and not any(isinstance(c, ProgressBar) for c in given):
            callbacks = [*callbacks, MSDMProgressBar()]
        return super()._instantiate_trainer(config, callbacks)
    def before_instantiate_classes(self) -> None:
        sub = self.config.get("subcommand")
        check_config_values(self.config[sub] if sub else self.config)
        # msdm predict writes images as they come (ChallengeImageWriter): do not also keep them all in memory
        if sub == "predict" and self.config[sub].get("return_predictions") is None:
            self.config[sub].return_predictions = False

    def instantiate_trainer(self, **kwargs):
        from lightning.pytorch.callbacks import BasePredictionWriter

        trainer = super().instantiate_trainer(**kwargs)
        if self.resumed is not None and self.resumed.pinned:
            from lightning_modules.resume import _is_launching_rank
            from lightning_modules.run_record import keep_csv_history

            if _is_launching_rank():
                keep_csv_history(trainer, self.resumed.global_step, self.resumed.run_dir)
        if self.subcommand == "predict" and not any(isinstance(c, BasePredictionWriter) for c in trainer.callbacks):
            from lightning_modules.callbacks.prediction import ChallengeImageWriter

            trainer.callbacks.append(ChallengeImageWriter())  # images in the challenge layout, with provenance
        return trainer

    def _parse_ckpt_path(self) -> None:
        """Re-parse a checkpoint's hyper-parameters as Lightning does, also for checkpoints written outside the CLI.

        In subclass mode Lightning expects the checkpoint to name its class (``_class_path``, which only CLI runs
        store); a checkpoint saved from a notebook or a plain ``Trainer`` lacks it and ``msdm test --ckpt_path``
        failed with "Option 'preset' is not accepted". The class given in the config (``-c`` / ``--model``) names it.
        """
        import sys

        import torch

        from lightning_modules.resume import _say, resolve_ckpt_keyword
        from lightning_modules.run_record import check_resume_config

        sub = self.config.get("subcommand")
        if sub:
            # "last" / "auto" / RUN_DIR -> a file (or None), logger version pinned, run folder locked
            self.resumed = resolve_ckpt_keyword(self.config[sub], sub, run_dir=self.run_dir)
        ckpt_path = self.config[sub].get("ckpt_path") if sub else None
        if ckpt_path:
            check_checkpoint_file(ckpt_path)
        else:
            return
        if self.resumed is not None and self.resumed.pinned and sub == "fit":
            current = yaml.safe_load(self._parser(sub).dump(self.config[sub], skip_none=False))
            changes = check_resume_config(self.resumed.run_dir, current, self.resume_with_changes)
            if (self.resumed.run_dir / "config.yaml").is_file():
                if changes:
                    _say(f"msdm fit: resuming with changes to the run's config: {len(changes)} "
                                        "setting(s) differ (recorded in config-resume-K.yaml)")
                return  # the config is the run's own (or changed on purpose): not re-read from the checkpoint
        hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
        hparams.pop("_instantiator", None)
        if not hparams:
            return
        class_path = hparams.pop("_class_path", None) or self.config[sub].get("model", {}).get("class_path")
        if class_path is None:
            raise InputError(f"{ckpt_path} does not name its LightningModule class: pass --model or -c with a config")
        model = {"class_path": class_path, "init_args": hparams}
        try:
            self.config = self.parser.parse_object({sub: {"model": model}}, self.config)
        except SystemExit:
            sys.stderr.write("Parsing of ckpt_path hyperparameters failed!\n")
            raise


SUBCOMMANDS = ("fit", "validate", "test", "predict")

_MAX_STEPS = Rule(int, 0, fix="-1 = no limit")


def check_config_values(cfg) -> None:
    """Refuse values that cannot work before anything is built (msdm.validation), each in one line: a batch size
    of 0, a negative learning rate, a CUDA accelerator on a machine without a GPU, ..."""
    from msdm.validation import check_device, check_init_args, check_value

    for section in ("model", "data"):
        comp = cfg.get(section) if hasattr(cfg, "get") else None
        args = comp.get("init_args") if comp is not None and hasattr(comp, "get") else None
        if args is not None:
            check_init_args(f"--{section}.init_args", args)
    trainer = cfg.get("trainer") if hasattr(cfg, "get") else None
    if trainer is not None:
        accelerator = trainer.get("accelerator")
        if isinstance(accelerator, str):
            check_device(accelerator, "--trainer.accelerator")
        steps = trainer.get("max_steps")
        if steps is not None and steps != -1:
            check_value("max_steps", steps, "--trainer.max_steps", rule=_MAX_STEPS)


def check_checkpoint_file(ckpt_path) -> None:
    """A checkpoint the user named must be a readable file: say so in one line rather than in a 40-line traceback."""
    from lightning_modules.resume import read_checkpoint_meta

    path = Path(str(ckpt_path))
    if path.is_dir():
        raise InputError(f"--ckpt_path {path} is a folder: give a .ckpt file in it (e.g. {path}/last.ckpt), a run "
                         "folder (version_N, with config.yaml), or --ckpt_path last")
    if not path.exists():
        raise PathNotFoundError(f"--ckpt_path {path}: file not found ({path.resolve()})", path)
    try:
        read_checkpoint_meta(path)
    except Exception as e:  # noqa: BLE001 - whatever torch raises for a broken file
        reason = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise InputError(f"--ckpt_path {path} is not a readable checkpoint ({reason}): pick another one (or "
                         "--ckpt_path last, which falls back to the newest intact checkpoint)") from None


def split_msdm_flags(argv: list[str]) -> tuple[list[str], dict]:
    """Take msdm's own resume options out of a LightningCLI command line.

    ``--resume-with-changes`` (also ``--resume_with_changes``) and ``--ckpt_path RUN_DIR``: a run folder
    (``version_N`` with ``config.yaml``, or its ``checkpoints/``) becomes ``--ckpt_path last`` pinned to that run,
    with ``-c RUN_DIR/config.yaml`` when no ``-c`` is given (the run's own config)."""
    out, extra = [], {"resume_with_changes": False, "run_dir": None}
    i = 0
    while i < len(argv):
        a = argv[i]
        if a in ("--resume-with-changes", "--resume_with_changes"):
            extra["resume_with_changes"] = True
            i += 1
            continue
        value = None
        if a == "--ckpt_path" and i + 1 < len(argv):
            value, step = argv[i + 1], 2
        elif a.startswith("--ckpt_path="):
            value, step = a.split("=", 1)[1], 1
        if value is not None and Path(value).is_dir():
            run = Path(value)
            if run.name == "checkpoints" and (run.parent / "config.yaml").is_file():
                run = run.parent
            if not (run / "config.yaml").is_file():
                raise InputError(f"--ckpt_path {value} is a folder but not a run folder (no config.yaml): give a "
                                 ".ckpt file, a run folder (version_N), or --ckpt_path last")
            extra["run_dir"] = str(run)
            out += ["--ckpt_path", "last"]
            i += step
            continue
        out.append(a)
        i += 1
    if extra["run_dir"] and not has_config_arg(out):
        out = out[:1] + ["-c", str(Path(extra["run_dir"]) / "config.yaml")] + out[1:]
    return out, extra


def cli_kwargs(argv: list[str] | None) -> dict:
    """The ``LightningCLI`` arguments ``msdm`` uses for this command line (default config only without ``-c``)."""
    files = default_config_files(argv)
    return dict(
        model_class=LightningModule,
        datamodule_class=LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        parser_kwargs={sub: {"default_config_files": files} for sub in SUBCOMMANDS},
    )


def run_lightning_cli(argv: list[str] | None = None, run: bool = True) -> MSDMLightningCLI:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    argv, extra = split_msdm_flags(list(argv))
    return MSDMLightningCLI(**cli_kwargs(argv), args=argv, run=run, **extra)
