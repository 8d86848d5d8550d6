"""Every shipped config runs: ``msdm fit -c configs/X.yaml --trainer.fast_dev_run=true`` with tiny models in place of
the hub weights and tiny local copies of the data. (The MSDM Kvasir / ROCOv2 configs run in test_data_cli.py,
quickstart_unet and cli.yaml in test_cli.py; test_configs.py checks --print_config of all of them.)"""

from pathlib import Path

import pytest

from lightning_modules.cli import run_lightning_cli
from msdm.lora.testing import write_tiny_flux, write_tiny_kandinsky_decoder, write_tiny_kandinsky_prior
from tests.data_fixtures import *  # noqa: F403 (session fixtures: local copies of each source)

ROOT = Path(__file__).resolve().parent.parent
# the configs' own loggers and callbacks run too (they write under the test's working folder)
FAST = ["--trainer.fast_dev_run=true", "--trainer.accelerator=cpu", "--trainer.devices=1", "--trainer.precision=32"]
DATA_SMALL = ["--data.init_args.resolution=32", "--data.init_args.batch_size=2", "--data.init_args.num_workers=0",
              "--data.init_args.persistent_workers=false", "--data.init_args.paraphrases=null"]
LORA_SMALL = ["--model.init_args.rank=4", "--model.init_args.alpha=4", "--model.init_args.height=32",
              "--model.init_args.width=32", "--model.init_args.num_inference_steps=2",
              "--model.init_args.frozen_dtype=float32", "--model.init_args.export_lora=false"]


@pytest.fixture(scope="module")
def tiny_bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("tiny_bases")
    return {"prior": write_tiny_kandinsky_prior(root / "prior"), "decoder": write_tiny_kandinsky_decoder(root / "decoder"),
            "flux": write_tiny_flux(root / "flux")}


def _model_args(config: str, bases: dict) -> list[str]:
    if config.startswith("kandinsky"):
        return [*LORA_SMALL, f"--model.init_args.prior_model={bases['prior']}",
                f"--model.init_args.decoder_model={bases['decoder']}", "--model.init_args.prior_num_inference_steps=2"]
    return [*LORA_SMALL, f"--model.init_args.model={bases['flux']}", "--model.init_args.max_sequence_length=16",
            "--model.init_args.text_cache_dir=memory", "--model.init_args.gradient_checkpointing=false"]


@pytest.mark.slow
@pytest.mark.parametrize("config", ["kandinsky_lora_prior_kvasir", "kandinsky_lora_decoder_kvasir", "flux_lora_kvasir",
                                    "kandinsky_lora_prior_rocov2", "kandinsky_lora_decoder_rocov2", "flux_lora_rocov2"])
def test_lora_configs_run(config, tiny_bases, kvasir_devset, roco_local, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    data = kvasir_devset if "kvasir" in config else roco_local
    cli = run_lightning_cli(["fit", "-c", str(ROOT / f"configs/{config}.yaml"), *FAST, *DATA_SMALL,
                             f"--data.init_args.data={data}", *_model_args(config, tiny_bases)])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1


def test_quickstart_vae_config_runs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cli = run_lightning_cli(["fit", "-c", str(ROOT / "configs/quickstart_vae.yaml"), *FAST,
                             "--model.init_args.preset=tiny", "--data.init_args.resolution=32",
                             "--data.init_args.num_train=4", "--data.init_args.num_val=2",
                             "--data.init_args.batch_size=2"])
    assert cli.trainer.state.finished and cli.trainer.global_step == 1
