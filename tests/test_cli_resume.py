"""``msdm fit --ckpt_path last`` resumes the newest run of the same experiment (a versioned TensorBoard logger, as in
every shipped config), says which checkpoint it loaded, and fails loudly when there is none; ``auto`` starts fresh.
A resume trains with the run's own config (or refuses), never rewrites the run's record, keeps metrics.csv, locks
the run's folder, and falls back to the newest intact checkpoint when ``last.ckpt`` is broken."""

import csv
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from lightning_modules.cli import run_lightning_cli
from lightning_modules.resume import lock_run_dir, pick_checkpoint, resolve_ckpt_keyword
from msdm.errors import InputError

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def _config(tmp_path, name="exp", csv_logger=False, signal_at=None) -> str:
    cfg = {
        "seed_everything": 5,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False, "enable_model_summary": False,
                    "limit_val_batches": 0, "num_sanity_val_steps": 0, "default_root_dir": str(tmp_path / "runs"),
                    "logger": {"class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                               "init_args": {"save_dir": str(tmp_path / "runs"), "name": name}},
                    "callbacks": [{"class_path": "lightning_modules.ResumableCheckpoint",
                                   "init_args": {"save_last": True}}]},
        "model": {"class_path": "lightning_modules.MSDMVAEModule",
                  "init_args": {"preset": "tiny", "lr": 1e-3, "ema_decay": 0.9}},
        "data": {"class_path": "datamodules.SyntheticGIDataModule",
                 "init_args": {"num_train": 6, "num_val": 2, "resolution": 32, "batch_size": 2, "seed": 1}},
    }
    if csv_logger:
        cfg["trainer"]["logger"]["class_path"] = "lightning.pytorch.loggers.CSVLogger"
        cfg["trainer"]["log_every_n_steps"] = 1
    if signal_at is not None:  # an interrupted run: SIGUSR1 (preemption notice) during that step, `last` saved after it, fit stops
        cfg["trainer"]["callbacks"].append({"class_path": "resume_harness.SignalAt",
                                            "init_args": {"step": signal_at, "sig": int(signal.SIGUSR1)}})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _fit(cfg, *extra):
    return run_lightning_cli(["fit", "-c", cfg, *extra])


def test_ckpt_path_last_resumes_the_newest_version_of_the_experiment(tmp_path, capsys):
    cfg = _config(tmp_path)
    first = _fit(cfg, "--trainer.max_steps=4")  # 3 steps per epoch: stops mid-epoch 1, `last` at step 4
    assert first.trainer.logger.version == 0
    capsys.readouterr()
    resumed = _fit(cfg, "--trainer.max_steps=7", "--ckpt_path", "last", "--resume-with-changes")  # train longer
    last = tmp_path / "runs" / "exp" / "version_0" / "checkpoints" / "last.ckpt"
    assert resumed.trainer.ckpt_path == str(last)
    assert resumed.trainer.logger.version == 0  # logs continue in the resumed run's folder, no version_1
    assert not (tmp_path / "runs" / "exp" / "version_1").exists()
    err = capsys.readouterr().err
    assert f"resuming from {last} (epoch 1, global step 4)" in err
    assert resumed.trainer.global_step == 7 and torch.load(last, weights_only=True)["global_step"] == 7
    # the same weights as 7 uninterrupted steps
    full = _fit(_config(tmp_path, "full"), "--trainer.max_steps=7")
    for a, b in zip(full.model.parameters(), resumed.model.parameters()):
        assert torch.equal(a, b)
    for a, b in zip(full.model.ema.ema.shadow_params, resumed.model.ema.ema.shadow_params):
        assert torch.equal(a, b)


def test_ckpt_path_last_without_a_checkpoint_fails_loudly(tmp_path, capsys):
    cfg = _config(tmp_path, "never_ran")
    with pytest.raises(SystemExit) as exc:
        _fit(cfg, "--trainer.max_steps=2", "--ckpt_path", "last")
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "no checkpoint to resume from" in err and "never_ran/version_*/checkpoints/last*.ckpt" in err
    assert not (tmp_path / "runs" / "never_ran").exists()  # nothing trained from scratch


def test_ckpt_path_auto_starts_fresh_then_resumes(tmp_path, capsys):
    cfg = _config(tmp_path, "requeued")
    first = _fit(cfg, "--trainer.max_steps=2", "--ckpt_path", "auto")
    assert first.trainer.ckpt_path is None and first.trainer.global_step == 2
    assert "starting a new run" in capsys.readouterr().err
    again = _fit(cfg, "--trainer.max_steps=3", "--ckpt_path", "auto", "--resume-with-changes")
    assert again.trainer.global_step == 3 and again.trainer.logger.version == 0
    assert "resuming from" in capsys.readouterr().err


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_resume_keeps_the_runs_config_record_and_metrics_history(tmp_path, capsys):
    cfg = _config(tmp_path, "own", csv_logger=True, signal_at=3)
    first = _fit(cfg, "--trainer.max_steps=7")  # interrupted: `last` at step 4
    assert first.trainer.global_step == 4
    run = tmp_path / "runs" / "own" / "version_0"
    record = (run / "config.yaml").read_bytes()
    before = [r for r in _rows(run / "metrics.csv") if r.get("train/loss")]
    assert len(before) == 4
    # a row the interrupted continuation logged after its last checkpoint (it is redone by the resume)
    with open(run / "metrics.csv", "a", newline="") as f:
        csv.writer(f).writerow(["" if k != "step" else "5" for k in _rows(run / "metrics.csv")[0]])

    # another batch size (or data, max_steps, ...) is not silently trained on: refused, naming the setting
    with pytest.raises(InputError, match=r"data\.init_args\.batch_size: 2 -> 3.*--resume-with-changes"):
        _fit(cfg, "--trainer.max_steps=7", "--data.init_args.batch_size=3", "--ckpt_path", "last")
    assert (run / "config.yaml").read_bytes() == record

    # the run folder alone resumes the run with its own config (no -c)
    capsys.readouterr()
    resumed = run_lightning_cli(["fit", "--ckpt_path", str(run)])
    assert resumed.trainer.global_step == 7 and resumed.trainer.logger.version == 0
    assert not (run.parent / "version_1").exists()
    assert (run / "config.yaml").read_bytes() == record and not list(run.glob("config-resume-*.yaml"))
    rows = [r for r in _rows(run / "metrics.csv") if r.get("train/loss")]
    assert [r["train/loss"] for r in rows[:4]] == [r["train/loss"] for r in before]  # history kept
    assert [int(r["step"]) for r in rows] == list(range(7))  # ... and continued, not mixed with the abandoned row
    assert [r["step"] for r in _rows(run / "metrics-abandoned-step4.csv")] == ["5"]

    # changes on purpose: trained with, recorded beside the untouched record
    more = _fit(cfg, "--trainer.max_steps=9", "--ckpt_path", "last", "--resume-with-changes")
    assert more.trainer.global_step == 9
    assert (run / "config.yaml").read_bytes() == record
    assert yaml.safe_load((run / "config-resume-1.yaml").read_text())["trainer"]["max_steps"] == 9
    assert [int(r["step"]) for r in _rows(run / "metrics.csv") if r.get("train/loss")] == list(range(9))


def _sub_cfg(tmp_path, keyword="last"):
    from jsonargparse import Namespace

    logger = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                       init_args=Namespace(save_dir=str(tmp_path / "runs"), name="exp", version=None))
    return Namespace(ckpt_path=keyword, trainer=Namespace(callbacks=[], logger=logger, default_root_dir=None))


@pytest.mark.parametrize("damage", ["zero-byte", "truncated"])
def test_a_broken_last_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, capsys, damage):
    folder = tmp_path / "runs" / "exp" / "version_0" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"epoch": 0, "global_step": 3, "state_dict": {"w": torch.ones(64)}}, folder / "epoch=0-step=3.ckpt")
    torch.save({"epoch": 1, "global_step": 6, "state_dict": {"w": torch.ones(64)}}, folder / "epoch=1-step=6.ckpt")
    good = (folder / "epoch=1-step=6.ckpt").read_bytes()
    (folder / "last.ckpt").write_bytes(b"" if damage == "zero-byte" else good[: len(good) // 2])
    path, meta, warnings = pick_checkpoint(folder)
    assert path == folder / "epoch=1-step=6.ckpt" and meta["global_step"] == 6
    assert "last.ckpt is unreadable" in warnings[0] and "falling back" in warnings[1]
    sub = _sub_cfg(tmp_path)
    resumed = resolve_ckpt_keyword(sub, "validate")
    assert sub.ckpt_path == str(folder / "epoch=1-step=6.ckpt") and resumed.global_step == 6
    err = capsys.readouterr().err
    assert "warning:" in err and "last.ckpt is unreadable" in err and "global step 6" in err


@pytest.mark.parametrize("what", ["zero-byte", "folder", "missing"])
def test_a_bad_ckpt_path_is_one_line_exit_2(tmp_path, capsys, what):
    from msdm.cli import main

    bad = tmp_path / "x.ckpt"
    if what == "zero-byte":
        bad.write_bytes(b"")
    elif what == "folder":
        bad.mkdir()
    cfg = _config(tmp_path)
    capsys.readouterr()
    assert main(["fit", "-c", cfg, "--ckpt_path", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("msdm fit: error: --ckpt_path") and str(bad) in err[0]


def test_a_run_folder_is_locked_while_it_trains(tmp_path):
    folder = tmp_path / "version_0"
    code = ("import sys, time; from pathlib import Path; from lightning_modules.resume import lock_run_dir; "
            f"lock_run_dir(Path({str(folder)!r})); print('locked', flush=True); time.sleep(120)")
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(InputError, match=f"is being trained by msdm fit \\(pid {holder.pid}"):
            lock_run_dir(folder)
    finally:
        holder.kill()
        holder.wait()
    lock_run_dir(folder)  # a dead holder (even kill -9) leaves no stale lock
