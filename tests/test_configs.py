"""Every YAML in configs/ (and cli.yaml) parses against the real class signatures: class paths resolve, argument
names and types are right. Nothing is instantiated, so hub-only weights named in paper configs are not needed."""

from pathlib import Path

import pytest
from lightning.pytorch import LightningDataModule, LightningModule

from lightning_modules.cli import MSDMLightningCLI

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))


class ParseOnly(MSDMLightningCLI):
    def instantiate_classes(self):  # validate the config, build nothing
        pass


def test_there_are_configs_for_every_generator_and_dataset():
    names = {p.stem for p in CONFIGS}
    for n in ("msdm_vae_kvasir", "msdm_unet_kvasir", "msdm_vae_rocov2", "msdm_unet_rocov2", "quickstart_vae",
              "quickstart_unet", "kandinsky_lora_prior_kvasir", "kandinsky_lora_decoder_kvasir", "flux_lora_kvasir"):
        assert n in names


@pytest.mark.parametrize("config", [ROOT / "cli.yaml", *CONFIGS], ids=lambda p: p.name)
def test_config_parses(config, monkeypatch):
    monkeypatch.setenv("MSDM_CLI_CONFIG", str(ROOT / "cli.yaml"))
    cli = ParseOnly(LightningModule, LightningDataModule, subclass_mode_model=True, subclass_mode_data=True,
                    run=False, args=["-c", str(config)], save_config_callback=None)
    assert cli.config.model.class_path.startswith("lightning_modules.")
    assert cli.config.data.class_path.startswith("datamodules.")
