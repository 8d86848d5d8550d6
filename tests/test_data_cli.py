"""`msdm fit --trainer.fast_dev_run=true` through the CLI with each DataModule and the paper configs (tiny model)."""

from pathlib import Path

import pytest

from lightning_modules.cli import run_lightning_cli
from tests.data_fixtures import *  # noqa: F403 (session fixtures: local copies of each source)

ROOT = Path(__file__).resolve().parent.parent
FAST = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.devices=1"]
DATA_SMALL = ["--data.init_args.resolution=32", "--data.init_args.batch_size=4", "--data.init_args.num_workers=0",
              "--data.init_args.persistent_workers=false", "--data.init_args.pin_memory=false"]


@pytest.fixture(scope="module")
def tiny_vae_ckpt(tmp_path_factory):
    from conftest import save_tiny_vae

    return Path(save_tiny_vae(tmp_path_factory.mktemp("tiny_vae") / "vae.ckpt"))


def _fit(args, datamodule_cls):
    """Run the CLI as `msdm fit ...` does (msdm.cli.main → run_lightning_cli) and check that one training and one validation batch went through."""
    cli = run_lightning_cli(args)
    assert type(cli.datamodule).__name__ == datamodule_cls
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
    assert cli.datamodule.report["train_images"] > 0 and cli.datamodule.report["skipped_total"] == 0
    return cli


def _unet_args(vae_ckpt, text_encoder):
    return ["--model.init_args.preset=tiny", f"--model.init_args.vae={vae_ckpt}",
            f"--model.init_args.text_encoder={text_encoder}", "--model.init_args.max_length=16",
            "--model.init_args.image_size=32", "--model.init_args.num_inference_steps=2"]


@pytest.mark.parametrize("config", ["msdm_vae_kvasir", "msdm_unet_kvasir"])
def test_fit_kvasir_configs(config, kvasir_devset, tiny_vae_ckpt, tiny_text_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(ROOT / f"configs/{config}.yaml"), *FAST, *DATA_SMALL,
            f"--data.init_args.data={kvasir_devset}"]
    if "unet" in config:
        args += [*_unet_args(tiny_vae_ckpt, tiny_text_encoder), "--data.init_args.paraphrases=rules:2"]
    else:
        args += ["--model.init_args.preset=tiny"]
    cli = _fit(args, "KvasirVQADataModule")
    if "unet" in config:  # the paper's strategy: originals + paraphrases in training batches
        assert str(cli.datamodule.strategy) == "add" and cli.datamodule.report["prompts_with_paraphrases"] > 0


@pytest.mark.parametrize("config", ["msdm_vae_rocov2", "msdm_unet_rocov2"])
def test_fit_rocov2_configs(config, roco_local, tiny_vae_ckpt, tiny_text_encoder, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    args = ["fit", "-c", str(ROOT / f"configs/{config}.yaml"), *FAST, *DATA_SMALL, f"--data.init_args.data={roco_local}"]
    args += _unet_args(tiny_vae_ckpt, tiny_text_encoder) if "unet" in config else ["--model.init_args.preset=tiny"]
    cli = _fit(args, "ROCOv2DataModule")
    assert cli.datamodule.report["test_images"] == 10  # the official test split, not the validation one


def test_fit_generic_datamodule_from_the_command_line(roco_hf, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the repository's cli.yaml (VAE) with the generic DataModule on a local HF copy
    args = ["fit", *FAST, "--model.init_args.preset=tiny", "--data=datamodules.image_text.ImageTextDataModule",
            f"--data.init_args.data={roco_hf}", "--data.init_args.id_column=image_id",
            "--data.init_args.val_split=validation", "--data.init_args.aspect=pad", *DATA_SMALL]
    _fit(args, "ImageTextDataModule")
