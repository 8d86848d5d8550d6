"""``msdm fit -c <config> --trainer.fast_dev_run=true`` for both LoRA modules, on tiny base folders written to tmp and
the embedded synthetic colonoscopy DataModule; plus a check that the shipped LoRA configs name real arguments."""

import lightning as L
import pytest
import yaml

from lightning_modules.cli import run_lightning_cli
from msdm.lora.testing import write_tiny_flux, write_tiny_kandinsky_decoder, write_tiny_kandinsky_prior


def _config(tmp_path, model: dict, callbacks=None) -> str:
    cfg = {
        "seed_everything": 0,
        "trainer": {"accelerator": "cpu", "devices": 1, "enable_progress_bar": False,
                    # a real logger: Lightning then checks that model and DataModule hparams do not clash
                    "logger": {"class_path": "lightning.pytorch.loggers.CSVLogger",
                               "init_args": {"save_dir": str(tmp_path / "logs")}},
                    "default_root_dir": str(tmp_path / "run"), "callbacks": callbacks or []},
        "model": model,
        "data": {"class_path": "datamodules.synthetic.SyntheticGIDataModule",
                 "init_args": {"num_train": 4, "num_val": 2, "resolution": 32, "batch_size": 2, "seed": 3}},
    }
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return str(path)


def _fit(monkeypatch, cfg):
    monkeypatch.setenv("MSDM_CLI_CONFIG", cfg)  # the repo's cli.yaml names the MSDM defaults, not ours
    return run_lightning_cli(["fit", "-c", cfg, "--trainer.fast_dev_run=true"])


@pytest.fixture(scope="module")
def tiny_kandinsky(tmp_path_factory):
    root = tmp_path_factory.mktemp("kandinsky")
    return write_tiny_kandinsky_prior(root / "prior"), write_tiny_kandinsky_decoder(root / "decoder")


@pytest.mark.parametrize("stage", ["prior", "decoder"])
def test_msdm_fit_kandinsky_lora_fast_dev_run(stage, tiny_kandinsky, tmp_path, monkeypatch):
    prior, decoder = tiny_kandinsky
    cfg = _config(tmp_path, {
        "class_path": "lightning_modules.kandinsky_lora.KandinskyLoRAModule",
        "init_args": {"stage": stage, "prior_model": prior, "decoder_model": decoder, "rank": 4, "snr_gamma": 5.0},
    })
    cli = _fit(monkeypatch, cfg)
    assert cli.trainer.global_step == 1
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").exists()


def test_msdm_fit_flux_lora_fast_dev_run(tmp_path, monkeypatch):
    flux = write_tiny_flux(tmp_path / "flux")
    cfg = _config(tmp_path, {
        "class_path": "lightning_modules.flux_lora.FluxLoRAModule",
        "init_args": {"model": flux, "rank": 4, "frozen_dtype": "float32", "max_sequence_length": 16,
                      "weighting_scheme": "logit_normal", "gradient_checkpointing": True, "height": 32, "width": 32,
                      "sample_prompts": ["generate an image containing a polyp"]},
    }, callbacks=[{"class_path": "lightning_modules.SampleGrid",
                   "init_args": {"num_images_per_prompt": 2, "num_inference_steps": 2}}])
    cli = _fit(monkeypatch, cfg)
    assert cli.trainer.global_step == 1
    assert (tmp_path / "run" / "lora" / "pytorch_lora_weights.safetensors").exists()
    assert (tmp_path / "run" / "samples" / "epoch=0000.png").exists()  # generate() through the SampleGrid callback


@pytest.mark.parametrize("name", ["kandinsky_lora_prior_kvasir", "kandinsky_lora_decoder_kvasir", "flux_lora_kvasir",
                                  "kandinsky_lora_prior_rocov2", "kandinsky_lora_decoder_rocov2", "flux_lora_rocov2"])
def test_lora_configs_name_real_arguments(name):
    import importlib
    import inspect
    from pathlib import Path

    cfg = yaml.safe_load((Path(__file__).resolve().parent.parent / "configs" / f"{name}.yaml").read_text())
    mod, _, cls = cfg["model"]["class_path"].rpartition(".")
    inspect.signature(getattr(importlib.import_module(mod), cls)).bind(**cfg["model"]["init_args"])
    trainer_args = {k: v for k, v in cfg["trainer"].items() if k not in ("logger", "callbacks")}
    inspect.signature(L.Trainer).bind(**trainer_args)
    for cb in cfg["trainer"]["callbacks"]:
        mod, _, cls = cb["class_path"].rpartition(".")
        inspect.signature(getattr(importlib.import_module(mod), cls)).bind(**cb.get("init_args", {}))
