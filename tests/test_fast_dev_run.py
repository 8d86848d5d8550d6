"""``fast_dev_run`` is a smoke run: sample grids use a few sampling steps, not the module's full schedule."""

import lightning.pytorch as pl
import pytest
import torch

from msdm.provenance import read_record

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


def test_sample_grid_uses_few_steps_under_fast_dev_run(tmp_path, tiny_text_encoder):
    from datamodules import SyntheticGIDataModule
    from lightning_modules import MSDMUNetModule, MSDMVAEModule, SampleGrid
    from lightning_modules.callbacks.images import FAST_DEV_RUN_STEPS

    torch.manual_seed(0)
    MSDMVAEModule(preset="tiny").export(str(tmp_path / "vae"))
    module = MSDMUNetModule(preset="tiny", vae=str(tmp_path / "vae"), text_encoder=tiny_text_encoder, max_length=16,
                            sample_prompts=["Generate an image containing a polyp."])
    assert module.hparams.num_inference_steps == 150  # DDIM-150, the reference: far too slow for a smoke run
    trainer = pl.Trainer(accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False,
                         default_root_dir=tmp_path, callbacks=[SampleGrid(num_images_per_prompt=1)])
    trainer.fit(module, datamodule=SyntheticGIDataModule(num_train=2, num_val=2, resolution=32, batch_size=2))
    rec = read_record(tmp_path / "samples" / "epoch=0000.png")
    assert rec["steps"] == FAST_DEV_RUN_STEPS
