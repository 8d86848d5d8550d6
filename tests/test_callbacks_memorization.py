"""MemorizationCallback on a tiny real MSDMUNetModule and the real-frames DataModule (Kvasir-SEG at 32 px): a module
whose generator returns (disguised) training frames is flagged, each image matched to the frame it copies; a
normal tiny training run logs a finite copy fraction with its interval to the logger and writes the CSV, JSON and
gallery under the logger's folder."""

import csv
import json
import warnings
from pathlib import Path

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from PIL import Image

from lightning_modules import MemorizationCallback, MSDMUNetModule
from msdm.metrics.realism.disguised_copies import CopyingGenerator
from msdm.metrics.testing import write_tiny_inception


class CopyingUNet(MSDMUNetModule):
    """The tiny MSDM U-Net module, its images replaced by disguised copies of its training frames (flip, crop ≤ 10 %,
    colour jitter, JPEG): image with seed ``s`` copies frame ``s mod len(frames)``."""

    copier: CopyingGenerator | None = None

    def generate_with_seeds(self, prompts, seeds, **sampling):
        return torch.cat([self.copier.generate([p], 1, seed=s) for p, s in zip(prompts, seeds)])


def _module(tiny_text_encoder, cls=MSDMUNetModule):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vae=None: an untrained VAE, fine here
        return cls(preset="tiny", vae=None, text_encoder=tiny_text_encoder, max_length=16, num_inference_steps=2,
                   latent_scaling=1.0, image_size=32)


@pytest.fixture
def datamodule(kvasir_dir, tmp_path, monkeypatch):
    from datamodules import FactCaptionDataModule

    monkeypatch.setenv("MSDM_CACHE_DIR", str(tmp_path / "cache"))
    dm = FactCaptionDataModule(data=str(kvasir_dir), val_fraction=0.2, resolution=32, batch_size=8, seed=1)
    dm.setup()
    return dm


@pytest.fixture(scope="module")
def inception(tmp_path_factory):
    return write_tiny_inception(tmp_path_factory.mktemp("inception") / "inception.pt", feature_dim=16)


def _trainer(tmp_path, callbacks, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_model_summary=False,
                      enable_progress_bar=False, logger=CSVLogger(tmp_path, name="run"), callbacks=callbacks, **kw)


def test_a_generator_returning_training_frames_is_flagged(tiny_text_encoder, datamodule, inception, tmp_path):
    module = _module(tiny_text_encoder, CopyingUNet)
    frames = datamodule.train_dataset.frames  # (id, image path, facts)
    module.copier = CopyingGenerator([f[1] for f in frames], size=32)
    cb = MemorizationCallback(num_images=16, seed=5, inception=inception, num_bootstrap=200)
    _trainer(tmp_path, [cb]).validate(module, datamodule=datamodule, verbose=False)
    m = cb.last_metrics
    assert m["memorization/copy_fraction"] >= 0.9
    assert m["memorization/copy_fraction_low"] <= m["memorization/copy_fraction"] <= m["memorization/copy_fraction_high"]
    assert cb.last_result.calibration.source == "held-out"  # the DataModule's val frames, never trained on
    # each image's nearest training frame (pixel view) is the frame it copies
    copied = [frames[(5 + k) % len(frames)][0] for k in range(16)]
    found = [r["nearest_train_pixels"] for r in cb.last_result.rows]
    assert np.mean([a == b for a, b in zip(found, copied)]) >= 0.9


def test_a_tiny_training_run_logs_and_writes_the_report(tiny_text_encoder, datamodule, inception, tmp_path):
    pl.seed_everything(0)
    module = _module(tiny_text_encoder)
    cb = MemorizationCallback(num_images=6, seed=0, inception=inception, num_bootstrap=200, num_pairs=4)
    trainer = _trainer(tmp_path, [cb], max_epochs=1, limit_train_batches=2, limit_val_batches=1,
                       num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("memorization/")}
    assert np.isfinite(logged["memorization/copy_fraction"]) and logged["memorization/n_generated"] == 6
    lo, cf, hi = (logged[f"memorization/copy_fraction{s}"] for s in ("_low", "", "_high"))
    assert 0 <= lo <= cf <= hi <= 1 and hi > 0  # never a degenerate [0, 0] (Clopper–Pearson at 0 copies)
    assert 0 < logged["memorization/median_feature_distance"] and -1 <= logged["memorization/max_ssim"] <= 1
    # to the logger (its metrics file) and as files under the logger's folder
    with open(f"{trainer.logger.log_dir}/metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("memorization/copy_fraction")]
    assert rows and float(rows[-1]["memorization/copy_fraction"]) == pytest.approx(cf)
    out = Path(trainer.logger.log_dir) / "memorization" / f"epoch=0000-step={trainer.global_step:06d}"
    assert {p.parent for p in cb.last_paths.values()} == {out}
    with open(cb.last_paths["csv"]) as f:
        table = list(csv.DictReader(f))
    assert len(table) == 6 and {r["nearest_train_pixels"] for r in table} <= {f[0] for f in datamodule.train_dataset.frames}
    summary = json.loads(cb.last_paths["json"].read_text())
    assert summary["n_generated"] == 6 and summary["calibration"] == "held-out" and summary["n_calibration"] == 30
    with Image.open(cb.last_paths["gallery"]) as im:
        assert im.width > 0 and im.height > 0


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_log_the_single_process_values(tiny_text_encoder, kvasir_dir, inception, tmp_path):
    """Images sharded over 2 gloo ranks (2 + 3), gathered and scored on rank 0, broadcast: every rank logs the
    values of a 1-process run, and rank 0 scores the same images in the same order."""
    from conftest import run_rank_script

    frames = sorted((kvasir_dir / "images").iterdir())
    folders = {"train": frames[:20], "calibration": frames[20:40]}
    for name, paths in folders.items():
        (tmp_path / name).mkdir()
        for p in paths:
            (tmp_path / name / p.name).symlink_to(p)
    results = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        out.mkdir()
        results[devices] = run_rank_script("ddp_memorization_callback.py", tmp_path / "train",
                                           tmp_path / "calibration", tiny_text_encoder, inception, out, devices,
                                           cwd=tmp_path, out=out, world_size=devices)
    single = results[1][0]
    assert single["metrics"]["memorization/n_generated"] == 5
    for rank in results[2]:
        assert rank["world_size"] == 2
        for k, v in single["metrics"].items():
            assert rank["metrics"][k] == pytest.approx(v, rel=1e-5, abs=1e-6), k
    two = results[2][0]["rows"]
    assert [r["generated"] for r in two] == [r["generated"] for r in single["rows"]]
    assert [r["nearest_train_pixels"] for r in two] == [r["nearest_train_pixels"] for r in single["rows"]]
    assert [r["ssim"] for r in two] == pytest.approx([r["ssim"] for r in single["rows"]], abs=1e-5)
    assert results[2][1]["rows"] is None  # only rank 0 scores
