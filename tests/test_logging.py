"""What a run logs and shows: one metric naming scheme (``train/loss``, ``val/loss``, …) in every module and config,
no ``hp_metric`` noise in TensorBoard, no ``v_num`` in the progress bar, no LightningCLI "args parameter" warning."""

import re
import warnings
from pathlib import Path

import pytest
import yaml

from msdm.cli import main

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = [ROOT / "cli.yaml", *sorted((ROOT / "configs").glob("*.yaml"))]
NAME = re.compile(r"^(train|val|test)/[a-z0-9_]+$")  # the scheme; Lightning adds "epoch" and LearningRateMonitor "lr-*"


def _callbacks_and_loggers(cfg):
    trainer = cfg.get("trainer") or {}
    loggers = trainer.get("logger")
    loggers = loggers if isinstance(loggers, list) else [loggers] if isinstance(loggers, dict) else []
    return trainer.get("callbacks") or [], loggers


@pytest.mark.parametrize("config", CONFIGS, ids=lambda p: p.name)
def test_configs_monitor_scheme_names_and_have_no_hp_metric(config):
    cfg = yaml.safe_load(config.read_text())
    callbacks, loggers = _callbacks_and_loggers(cfg)
    for cb in callbacks:
        monitor = (cb.get("init_args") or {}).get("monitor")
        if monitor is not None:
            assert NAME.match(monitor), (config.name, monitor)
    for lg in loggers:
        if lg["class_path"].endswith("TensorBoardLogger"):
            assert lg["init_args"].get("default_hp_metric") is False, config.name


def _tb_scalar_tags(root: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tags = set()
    for events in root.rglob("events.out.tfevents.*"):
        acc = EventAccumulator(str(events))
        acc.Reload()
        tags |= set(acc.Tags()["scalars"])
    return tags


def test_msdm_fit_logs_scheme_names_without_hp_metric_v_num_or_args_warning(tmp_path, monkeypatch, capsys):
    """The default config (VAE on synthetic scenes) through the real console script, for two steps and a validation."""
    from lightning.pytorch.callbacks import Callback

    monkeypatch.chdir(tmp_path)
    seen = {}

    class Bar(Callback):  # what the progress bar would show, read at the end of training
        def on_train_end(self, trainer, pl_module):
            seen["bar"] = trainer.progress_bar_callback.get_metrics(trainer, pl_module)
            seen["bar_class"] = type(trainer.progress_bar_callback).__name__

    import lightning_modules

    monkeypatch.setattr(lightning_modules, "_TestBar", Bar, raising=False)
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        main(["fit", "--trainer.max_steps=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
              "--trainer.accelerator=cpu", "--model.init_args.preset=tiny", "--data.init_args.num_train=8",
              "--data.init_args.num_val=4", "--data.init_args.batch_size=4", "--data.init_args.resolution=32",
              "--trainer.callbacks+=lightning_modules._TestBar"])
    messages = [str(x.message) for x in w]
    assert not [m for m in messages if "args parameter" in m], messages
    tags = _tb_scalar_tags(tmp_path / "runs")
    assert "hp_metric" not in tags and {"train/loss", "val/loss"} <= tags, tags
    odd = {t for t in tags if not NAME.match(t) and t != "epoch" and not t.startswith("lr-")}
    assert not odd, odd
    assert seen["bar_class"] == "MSDMProgressBar"
    assert "v_num" not in seen["bar"] and "train/loss" in seen["bar"], seen["bar"]
