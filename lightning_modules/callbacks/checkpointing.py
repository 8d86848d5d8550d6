"""``ResumableCheckpoint``: Lightning's ``ModelCheckpoint`` that a long run can be resumed from after any stop.

What it adds to ``ModelCheckpoint`` (docs/scaling.md, "Resume, preemption and requeue"):

* **The final steps are saved.** ``ModelCheckpoint(save_last=True)`` writes ``last`` at epoch or validation ends, so
  a run stopped by ``max_steps`` (or ``max_time``, or an early stop) in the middle of an epoch never wrote its last
  steps; here ``last`` is written at the end of fit whenever no checkpoint holds the final global step.
* **Preemption signals save and stop cleanly.** From the first training batch on, ``SIGUSR1`` (SLURM's
  ``--signal=USR1@90``, sent ahead of the time limit) and ``SIGTERM`` (preemption, ``scancel``) only set a flag (the
  handlers are installed at ``on_train_start``, after Lightning's own, and removed when training ends or fails); at
  the end of the current training batch — a
  consistent point: the step is complete and the loops' counters say so — ``last`` is written and the trainer
  stops. Under DDP every rank takes the decision together (one boolean all-reduce per batch). Lightning's own SLURM
  handler instead writes ``hpc_ckpt_N.ckpt`` *inside* the signal handler, i.e. at an arbitrary point of a step, so
  a resumed run could not continue exactly; it is not installed while this callback handles ``SIGUSR1``.
* **Requeue.** After a signal listed in ``requeue_signals`` (default ``SIGUSR1``, Lightning's convention) global rank
  0 runs ``scontrol requeue $SLURM_JOB_ID`` (``SLURM_ARRAY_JOB_ID_SLURM_ARRAY_TASK_ID`` for array jobs) when the run
  is a SLURM job. The requeued job resumes with ``msdm fit ... --ckpt_path=auto``.
* **Atomic files.** A checkpoint is written to ``<name>.tmp`` and renamed, so ``kill -9`` during a save leaves the
  previous ``last.ckpt`` intact (a truncated one would not load).

Exactness of the resumed run comes from the modules (randomness keyed on the global step,
``lightning_modules.guards``) and the resumable training loaders (:class:`msdm.data.loader.ResumableDataLoader`).
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import threading

import lightning.pytorch as pl
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities import rank_zero_info, rank_zero_warn

__all__ = ["ResumableCheckpoint"]

DEFAULT_SIGNALS = ("SIGUSR1", "SIGTERM")
DEFAULT_REQUEUE = ("SIGUSR1",)


def _signal_number(sig: str | int) -> int:
    if isinstance(sig, int):
        return int(sig)
    name = str(sig).upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    if not hasattr(signal, name):
        raise ValueError(f"unknown signal {sig!r} (e.g. SIGUSR1, SIGTERM)")
    return int(getattr(signal, name))


def slurm_job_id() -> str | None:
    """The id ``scontrol requeue`` takes for this job (array jobs: ``ARRAYJOB_TASK``), or ``None`` outside SLURM."""
    env = os.environ
    if env.get("SLURM_ARRAY_JOB_ID") and env.get("SLURM_ARRAY_TASK_ID"):
        return f"{env['SLURM_ARRAY_JOB_ID']}_{env['SLURM_ARRAY_TASK_ID']}"
    return env.get("SLURM_JOB_ID") or None


class ResumableCheckpoint(ModelCheckpoint):
    """``ModelCheckpoint`` + ``last`` at the end of fit + save-and-stop on preemption signals + requeue (module doc).

    Args (besides every ``ModelCheckpoint`` argument; ``save_last`` defaults to ``True`` and cannot be off):
        save_on_train_end: write ``last`` when fit ends at a step no checkpoint holds yet.
        signals: signals that make the run save ``last`` at the end of the current batch and stop (default
            ``[SIGUSR1, SIGTERM]``; ``[]``: none, Lightning's own handling applies).
        requeue_signals: signals after which the job requeues itself when it runs under SLURM (default
            ``[SIGUSR1]``).
    """

    def __init__(self, *args, save_last: bool = True, save_on_train_end: bool = True,
                 signals: list[str] | None = None, requeue_signals: list[str] | None = None, **kwargs):
        if save_last is not True:
            raise ValueError(f"ResumableCheckpoint(save_last={save_last!r}): `last` must be a file of its own (True); "
                             "use ModelCheckpoint for top-k files only")
        super().__init__(*args, save_last=True, **kwargs)
        self.save_on_train_end = bool(save_on_train_end)
        self.signals = [_signal_number(s) for s in (DEFAULT_SIGNALS if signals is None else signals)]
        self.requeue_signals = {_signal_number(s) for s in (DEFAULT_REQUEUE if requeue_signals is None
                                                             else requeue_signals)}
        self.received_signal: int | None = None
        self.preempted_at_step: int | None = None  # global step of the save made because of a signal
        self._previous_handlers: dict[int, object] = {}
        self._last_saved_step: int | None = None  # global step held by the newest `last` file

    # ------------------------------------------------------------------------------------------------ signals
    def _handler(self, signum, frame) -> None:
        # Only note it: saving here would catch the step half-done. The trainer saves at the end of the batch.
        if self.received_signal is None:
            self.received_signal = int(signum)
        previous = self._previous_handlers.get(int(signum))
        # Chain to what was installed (for SIGTERM: Lightning's notifier, which ends fit after this batch), except
        # for requeue signals: Lightning's SLURM handler there would save mid-step and requeue a second time.
        if callable(previous) and int(signum) not in self.requeue_signals:
            previous(signum, frame)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        # Installed here, after Lightning registered its own handlers (which it restores when fit ends, also on an
        # exception), and removed at train end / on an exception, so nothing of ours outlives fit.
        self.received_signal = None
        self.preempted_at_step = None
        if threading.current_thread() is not threading.main_thread():
            return
        for signum in self.signals:
            if signum not in self._previous_handlers:
                self._previous_handlers[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handler)

    def _restore_handlers(self) -> None:
        if threading.current_thread() is threading.main_thread():
            for signum, previous in self._previous_handlers.items():
                signal.signal(signum, previous if previous is not None else signal.SIG_DFL)
        self._previous_handlers = {}

    def _signalled(self, trainer: pl.Trainer) -> bool:
        flagged = self.received_signal is not None
        if trainer.world_size > 1:  # every rank stops at the same step, whichever rank got the signal
            flagged = trainer.strategy.reduce_boolean_decision(flagged, all=False)
        return bool(flagged)

    # ------------------------------------------------------------------------------------------------ hooks
    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        if self.signals and self._signalled(trainer):
            self._save_on_stop(trainer, "signal")
            self.preempted_at_step = trainer.global_step
            trainer.should_stop = True
            self._maybe_requeue(trainer)
        elif self.save_on_train_end and (trainer.should_stop or 0 < trainer.max_steps <= trainer.global_step):
            # The run ends after this batch (max_steps; max_time or another callback set should_stop). Save here,
            # mid-epoch as the loops see it: a checkpoint written later, at on_train_end, records the interrupted
            # epoch as finished, and a run resumed from it would start the next epoch instead of finishing this one.
            self._save_on_stop(trainer, "end of fit")

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        self._restore_handlers()
        # a signal during validation: Lightning stops there (SIGTERMException); the training step is complete
        if self.received_signal is not None and self.preempted_at_step is None and trainer.state.fn == "fit":
            self._save_on_stop(trainer, "signal")
            self.preempted_at_step = trainer.global_step
            self._maybe_requeue(trainer)

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._restore_handlers()
        if self.save_on_train_end:  # normally saved at the last batch already; this catches other stops
            self._save_on_stop(trainer, "end of fit")

    def _save_on_stop(self, trainer: pl.Trainer, why: str) -> None:
        if trainer.fast_dev_run or trainer.sanity_checking or trainer.global_step == 0:
            return
        if self._last_saved_step == trainer.global_step:
            return
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        rank_zero_info(f"ResumableCheckpoint: saved {self.last_model_path} at global step {trainer.global_step} "
                       f"({why})")

    def _maybe_requeue(self, trainer: pl.Trainer) -> None:
        if self.received_signal not in self.requeue_signals or not trainer.is_global_zero:
            return
        job = slurm_job_id()
        if job is None:
            return
        if not re.fullmatch(r"[0-9_]+", job):
            rank_zero_warn(f"ResumableCheckpoint: not requeueing: unexpected SLURM job id {job!r}")
            return
        try:
            result = subprocess.call(["scontrol", "requeue", job])
        except FileNotFoundError:
            rank_zero_warn("ResumableCheckpoint: `scontrol` not found, the job was not requeued")
            return
        if result == 0:
            rank_zero_info(f"ResumableCheckpoint: requeued SLURM job {job}")
        else:
            rank_zero_warn(f"ResumableCheckpoint: `scontrol requeue {job}` failed with exit code {result}")

    # ------------------------------------------------------------------------------------------------ files
    def _save_last_checkpoint(self, trainer: pl.Trainer, monitor_candidates: dict) -> None:
        super()._save_last_checkpoint(trainer, monitor_candidates)
        self._last_saved_step = trainer.global_step

    def _save_checkpoint(self, trainer: pl.Trainer, filepath: str) -> None:
        """As ``ModelCheckpoint._save_checkpoint``, but atomically on local disks (write ``.tmp``, then rename)."""
        if not _is_local(filepath):
            return super()._save_checkpoint(trainer, filepath)
        from weakref import proxy

        tmp = f"{filepath}.tmp"
        trainer.save_checkpoint(tmp, self.save_weights_only)  # rank 0 writes; ends with a barrier
        if trainer.is_global_zero:
            os.replace(tmp, filepath)
        trainer.strategy.barrier("ResumableCheckpoint.rename")
        self._last_global_step_saved = trainer.global_step
        self._last_checkpoint_saved = filepath
        if trainer.is_global_zero:
            for logger in trainer.loggers:
                logger.after_save_checkpoint(proxy(self))


def _is_local(path: str) -> bool:
    return "://" not in str(path)
