"""``msdm test`` / ``msdm validate`` on the VAE: PSNR, SSIM, LPIPS (given local VGG weights) and the FID of the
reconstructions, each against an independent computation over the same split."""

import numpy as np
import pytest
import torch
import yaml

from lightning_modules.cli import run_lightning_cli

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def vae_setup(tmp_path_factory):
    import lightning.pytorch as pl
    from torchvision.models.vgg import cfgs, make_layers

    from lightning_modules import MSDMVAEModule

    d = tmp_path_factory.mktemp("vae_eval")
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in make_layers(cfgs["D"]).state_dict().items()}  # random VGG16 trunk
    torch.save(vgg, d / "vgg16.pth")
    module = MSDMVAEModule(preset="tiny", ema_decay=0.9, lpips_weights=str(d / "vgg16.pth"))
    trainer = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(d / "vae.ckpt")
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False},
           "model": {"class_path": "lightning_modules.MSDMVAEModule",
                     "init_args": {"preset": "tiny", "lpips_weights": str(d / "vgg16.pth")}},
           "data": {"class_path": "datamodules.SyntheticGIDataModule",
                    "init_args": {"num_train": 4, "num_val": 5, "resolution": 32, "batch_size": 2, "seed": 1}}}
    (d / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    return d, module


def _recon(module, images):
    with torch.no_grad(), module.ema.swapped_in():
        return module.vae(images, sample_posterior=False).sample.clamp(-1, 1)


@pytest.mark.slow  # Inception at 299² on a CPU
def test_msdm_test_reports_reconstruction_metrics(vae_setup):
    from torchmetrics.functional.image import structural_similarity_index_measure

    from datamodules import SyntheticGIDataModule
    from msdm.losses import VGGLPIPS
    from msdm.metrics.realism.features import InceptionExtractor
    from msdm.metrics.realism.frechet import frechet_distance

    d, module = vae_setup
    cli = run_lightning_cli(["test", "-c", str(d / "cfg.yaml"), "--ckpt_path", str(d / "vae.ckpt")], run=True)
    got = {k: float(v) for k, v in cli.trainer.callback_metrics.items()}

    dm = SyntheticGIDataModule(num_train=4, num_val=5, resolution=32, batch_size=2, seed=1)
    dm.setup("test")
    x = torch.stack([dm.test_set[i]["pixel_values"] for i in range(len(dm.test_set))])
    r = _recon(module, x)
    x01, r01 = (x + 1) / 2, (r + 1) / 2
    mse = float(((x01.double() - r01.double()) ** 2).mean())
    assert got["test/psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)  # over the whole split
    assert got["test/ssim"] == pytest.approx(float(structural_similarity_index_measure(r01, x01, data_range=1.0)),
                                             rel=1e-5)
    lp = VGGLPIPS(str(d / "vgg16.pth"))
    with torch.no_grad():
        assert got["test/lpips"] == pytest.approx(float(lp(r, x).mean()), rel=1e-5)
    inception = InceptionExtractor()
    fid = frechet_distance(inception.extract(x01).double().numpy(), inception.extract(r01).double().numpy())
    assert got["test/fid"] == pytest.approx(fid, rel=1e-4, abs=1e-3)


def test_msdm_validate_reports_psnr_and_ssim(vae_setup):
    d, _ = vae_setup
    cli = run_lightning_cli(["validate", "-c", str(d / "cfg.yaml"), "--ckpt_path", str(d / "vae.ckpt")])
    got = cli.trainer.callback_metrics
    assert {"val/loss", "val/psnr", "val/ssim", "val/lpips"} <= set(got)
    assert "test/fid" not in got
