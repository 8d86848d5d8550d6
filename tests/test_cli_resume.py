"""``msdm fit --ckpt_path last`` resumes the newest run of the same experiment (a versioned TensorBoard logger, as in
every shipped config), says which checkpoint it loaded, and fails loudly when there is none; ``auto`` starts fresh."""

import pytest
import torch
import yaml

from lightning_modules.cli import run_lightning_cli

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def _config(tmp_path, name="exp") -> str:
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
    resumed = _fit(cfg, "--trainer.max_steps=7", "--ckpt_path", "last")
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
    again = _fit(cfg, "--trainer.max_steps=3", "--ckpt_path", "auto")
    assert again.trainer.global_step == 3 and again.trainer.logger.version == 0
    assert "resuming from" in capsys.readouterr().err
