"""The msdm console script: presets, generate (challenge layout), export, Lightning fit through the CLI."""

import json
import os
import subprocess
import sys
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from PIL import Image

from msdm.cli import main

ROOT = Path(__file__).resolve().parent.parent


def test_help_lists_commands(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    for cmd in ("fit", "generate", "export", "quickstart", "presets"):
        assert cmd in out


def test_presets_prints_the_reference_sizes(capsys):
    assert main(["presets"]) == 0
    out = capsys.readouterr().out
    assert "13.37 M" in out and "326.51 M" in out


def test_console_entry_point_runs_as_module():
    proc = subprocess.run([sys.executable, "-m", "msdm", "--version"], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.startswith("msdm ")


@pytest.fixture(scope="module")
def unet_ckpt(tmp_path_factory, kvasir_samples, tiny_text_encoder):
    from conftest import make_loader

    from lightning_modules import MSDMUNetModule, MSDMVAEModule

    d = tmp_path_factory.mktemp("cli")
    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="tiny"))
    tr.save_checkpoint(d / "vae.ckpt")
    pl.seed_everything(0)
    m = MSDMUNetModule(preset="tiny", vae=str(d / "vae.ckpt"), text_encoder=tiny_text_encoder, max_length=16,
                       num_inference_steps=3, lr=1e-3)
    tr = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    tr.fit(m, make_loader(kvasir_samples))
    tr.save_checkpoint(d / "unet.ckpt")
    return d


def test_export_then_generate_writes_the_challenge_layout(unet_ckpt, tmp_path, capsys):
    assert main(["export", str(unet_ckpt / "unet.ckpt"), "--out", str(tmp_path / "pipe")]) == 0
    assert (tmp_path / "pipe" / "model_index.json").exists()
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Generate an image containing a polyp.\n\n# comment\nGenerate an image with no polyps.\n")
    out = tmp_path / "gen"
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(prompts), "--num-images", "3",
                 "--out", str(out), "--steps", "2", "--batch-size", "4"]) == 0
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"prompt{p:04d}_img{i:04d}.png" for p in (1, 2) for i in (1, 2, 3)]
    assert json.loads((out / "prompts.json").read_text()) == {
        "1": "Generate an image containing a polyp.", "2": "Generate an image with no polyps."}
    assert Image.open(out / names[0]).size == (32, 32)
    # image by image reproducible, whatever the batch size
    out2 = tmp_path / "gen2"
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(prompts), "--num-images", "3",
                 "--out", str(out2), "--steps", "2", "--batch-size", "1"]) == 0
    for n in names:
        a = torch.tensor(list(Image.open(out / n).getdata()))
        b = torch.tensor(list(Image.open(out2 / n).getdata()))
        assert (a - b).abs().max() <= 1  # float summation order may differ by one grey level across batch sizes


def test_export_of_a_vae_checkpoint(unet_ckpt, tmp_path, capsys):
    from msdm.models.loading import load_vae

    assert main(["export", str(unet_ckpt / "vae.ckpt"), "--out", str(tmp_path / "vae")]) == 0
    assert load_vae(tmp_path / "vae").config.latent_channels == 4


def test_fit_vae_through_the_cli_with_the_default_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no cli.yaml here: the repository's default config is used
    main(["fit", "--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--model.init_args.preset=tiny",
          "--data.init_args.resolution=32", "--data.init_args.batch_size=4", "--data.init_args.num_train=8",
          "--data.init_args.num_val=4"])
    assert (tmp_path / "runs").exists()


def test_fit_unet_through_the_cli(unet_ckpt, tiny_text_encoder, tmp_path, monkeypatch):
    import math

    from lightning_modules.cli import run_lightning_cli

    monkeypatch.chdir(tmp_path)
    cli = run_lightning_cli(["fit", "-c", str(ROOT / "configs/quickstart_unet.yaml"), "--trainer.fast_dev_run=true",
          "--trainer.accelerator=cpu", "--model.init_args.preset=tiny", f"--model.init_args.vae={unet_ckpt / 'vae.ckpt'}",
          f"--model.init_args.text_encoder={tiny_text_encoder}", "--model.init_args.max_length=16",
          "--model.init_args.image_size=32", "--model.init_args.num_inference_steps=2",
          "--data.init_args.resolution=32", "--data.init_args.batch_size=4", "--data.init_args.num_train=8",
          "--data.init_args.num_val=4"])
    grids = list(tmp_path.glob("runs/**/samples/*.png"))
    assert grids, "the SampleGrid callback wrote no grid"
    # the shipped U-Net configs log FID of generated images against the held-out ones (offline Inception)
    assert math.isfinite(float(cli.trainer.callback_metrics["val/fid"]))


def test_cli_thread_policy_bounds_the_openmp_spin_unless_the_user_chose(monkeypatch):
    # PASSIVE made an idle 2-core U-Net step 1.7x slower; a bounded spin keeps idle speed (msdm.cli._cpu_thread_policy)
    from msdm.cli import _cpu_thread_policy

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("GOMP_SPINCOUNT", raising=False)
    _cpu_thread_policy()
    assert os.environ["GOMP_SPINCOUNT"] == "20000" and "OMP_WAIT_POLICY" not in os.environ
    monkeypatch.setenv("GOMP_SPINCOUNT", "7")
    _cpu_thread_policy()
    assert os.environ["GOMP_SPINCOUNT"] == "7"
    monkeypatch.delenv("GOMP_SPINCOUNT")
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    _cpu_thread_policy()
    assert "GOMP_SPINCOUNT" not in os.environ and os.environ["OMP_WAIT_POLICY"] == "PASSIVE"
