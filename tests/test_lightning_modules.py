"""MSDMVAEModule / MSDMUNetModule: training, checkpoints without frozen parts, exact resume, non-finite guard."""

import glob

import lightning.pytorch as pl
import pytest
import torch
from conftest import make_loader

from lightning_modules import MSDMUNetModule, MSDMVAEModule
from msdm.models.loading import load_vae


def _trainer(tmp_path, **kw):
    kw.setdefault("max_epochs", 1)
    kw.setdefault("num_sanity_val_steps", 0)
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False, logger=False, **kw)


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory, kvasir_samples):
    d = tmp_path_factory.mktemp("vae")
    pl.seed_everything(0)
    m = MSDMVAEModule(preset="tiny", lr=2e-3)
    tr = _trainer(d, max_epochs=2, enable_checkpointing=False)
    tr.fit(m, make_loader(kvasir_samples), make_loader(kvasir_samples, shuffle=False))
    tr.save_checkpoint(d / "vae.ckpt")
    return d / "vae.ckpt", m


def _unet(vae_ckpt, tiny_text_encoder, **kw):
    kw = {"preset": "tiny", "vae": str(vae_ckpt[0]), "text_encoder": tiny_text_encoder, "max_length": 16, "lr": 1e-3,
          "num_inference_steps": 4, **kw}
    return MSDMUNetModule(**kw)


def test_vae_checkpoint_loads_and_exports(vae_ckpt, tmp_path, kvasir_samples):
    path, module = vae_ckpt
    vae = load_vae(path)
    x = torch.stack([s["pixel_values"] for s in kvasir_samples[:2]])
    with torch.no_grad():
        ref = module.vae(x, sample_posterior=False).sample
        torch.testing.assert_close(vae(x, sample_posterior=False).sample, ref)
    module.export(str(tmp_path / "vae"))
    with torch.no_grad():
        torch.testing.assert_close(load_vae(tmp_path / "vae")(x, sample_posterior=False).sample, ref)


def test_unet_checkpoint_holds_only_what_trains(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    pl.seed_everything(0)
    m = _unet(vae_ckpt, tiny_text_encoder, latent_scaling="auto", ema_decay=0.9)
    tr = _trainer(tmp_path, max_epochs=1)
    tr.fit(m, make_loader(kvasir_samples), make_loader(kvasir_samples, shuffle=False))
    ckpt_path = glob.glob(str(tmp_path / "**/*.ckpt"), recursive=True)[0]
    ckpt = torch.load(ckpt_path, weights_only=True)
    prefixes = {k.split(".")[0] for k in ckpt["state_dict"]}
    assert prefixes == {"unet", "latent_scale"}, prefixes  # no vae.*, no text_encoder.*
    assert "ema" in ckpt and torch.isfinite(ckpt["state_dict"]["latent_scale"])
    m2 = MSDMUNetModule.load_from_checkpoint(ckpt_path)  # strict load; frozen parts come from their sources
    for a, b in zip(m.unet.parameters(), m2.unet.parameters()):
        assert torch.equal(a, b)
    img1 = m.generate(["Generate an image with 1 polyp."], num_images_per_prompt=2, seed=3)
    img2 = m2.generate(["Generate an image with 1 polyp."], num_images_per_prompt=2, seed=3)
    assert img1.shape == (2, 3, 32, 32)
    torch.testing.assert_close(img1, img2, atol=0, rtol=0)
    # per-image seeds: the batch size does not change an image
    torch.testing.assert_close(m.generate(["Generate an image with 1 polyp."], 2, seed=3, batch_size=1), img1)


def test_unet_loss_falls(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    pl.seed_everything(0)
    m = _unet(vae_ckpt, tiny_text_encoder, lr=3e-3, cfg_dropout=0.0, loss_type="mse")
    val = make_loader(kvasir_samples, batch_size=8, shuffle=False)
    before = _trainer(tmp_path).validate(m, val, verbose=False)[0]["val/loss"]
    _trainer(tmp_path, max_epochs=25, enable_checkpointing=False).fit(m, make_loader(kvasir_samples, batch_size=8))
    after = _trainer(tmp_path).validate(m, val, verbose=False)[0]["val/loss"]
    assert after < 0.7 * before, (before, after)


def test_unet_v_prediction_recipe_trains_and_exports_its_noise_process(vae_ckpt, tiny_text_encoder, kvasir_samples,
                                                                        tmp_path):
    # msdm's recipe for real frames: v-prediction, zero terminal SNR, min-SNR-5; the loss falls and the exported
    # pipeline samples the process the U-Net was trained on (the scheduler config carries it)
    from msdm.pipeline import MSDMPipeline

    pl.seed_everything(0)
    m = _unet(vae_ckpt, tiny_text_encoder, lr=3e-3, cfg_dropout=0.0, loss_type="mse", prediction_type="v_prediction",
              zero_terminal_snr=True, snr_gamma=5.0, guidance_interval=(100, 900), sampler="dpm++sde")
    val = make_loader(kvasir_samples, batch_size=8, shuffle=False)
    before = _trainer(tmp_path).validate(m, val, verbose=False)[0]["val/loss"]
    _trainer(tmp_path, max_epochs=25, enable_checkpointing=False).fit(m, make_loader(kvasir_samples, batch_size=8))
    after = _trainer(tmp_path).validate(m, val, verbose=False)[0]["val/loss"]
    assert after < 0.7 * before, (before, after)
    m.export(str(tmp_path / "pipe"))
    pipe = MSDMPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.scheduler.config.prediction_type == "v_prediction" and pipe.scheduler.config.rescale_betas_zero_snr
    assert tuple(pipe.config.guidance_interval) == (100.0, 900.0)
    img = m.generate(["Generate an image with 1 polyp."], 2, seed=1)
    assert img.shape == (2, 3, 32, 32) and torch.isfinite(img).all()


def test_resume_at_epoch_boundary_matches_uninterrupted(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(root, epochs, ckpt_path=None):
        pl.seed_everything(123)
        m = _unet(vae_ckpt, tiny_text_encoder, unet_overrides={"dropout": 0.1}, ema_decay=0.5)
        cb = ModelCheckpoint(dirpath=root, save_last=True, every_n_epochs=1)
        tr = _trainer(root, max_epochs=epochs, callbacks=[cb], num_sanity_val_steps=1)
        tr.fit(m, make_loader(kvasir_samples, seed=5), make_loader(kvasir_samples, shuffle=False), ckpt_path=ckpt_path)
        return m

    full = run(tmp_path / "full", 3)
    run(tmp_path / "part", 2)
    resumed = run(tmp_path / "part", 3, ckpt_path=str(tmp_path / "part" / "last.ckpt"))
    for a, b in zip(full.unet.parameters(), resumed.unet.parameters()):
        torch.testing.assert_close(a, b, atol=0, rtol=0)
    for a, b in zip(full.ema.ema.shadow_params, resumed.ema.ema.shadow_params):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_non_finite_loss_stops_with_the_step_and_keeps_last_good_checkpoint(vae_ckpt, tiny_text_encoder,
                                                                           kvasir_samples, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    pl.seed_everything(0)
    m = _unet(vae_ckpt, tiny_text_encoder)
    cb = ModelCheckpoint(dirpath=tmp_path, save_last=True, every_n_epochs=1)
    _trainer(tmp_path, max_epochs=1, callbacks=[cb]).fit(m, make_loader(kvasir_samples))
    good = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]

    bad = [dict(s) for s in kvasir_samples]
    bad[5]["pixel_values"] = torch.full_like(bad[5]["pixel_values"], float("nan"))
    with pytest.raises(FloatingPointError, match=r"global step \d+"):
        _trainer(tmp_path, max_epochs=2, callbacks=[cb]).fit(m, make_loader(bad, shuffle=False),
                                                              ckpt_path=str(tmp_path / "last.ckpt"))
    after = torch.load(tmp_path / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(good[k], after[k]) for k in good)
    assert all(torch.isfinite(p).all() for p in m.unet.parameters())  # stopped before the optimizer step


def test_generation_info_names_the_sampling_settings(vae_ckpt, tiny_text_encoder):
    info = _unet(vae_ckpt, tiny_text_encoder, guidance_scale=3.0).generation_info()
    assert info["model"] == "MSDM-tiny" and info["sampler"] == "ddim" and info["guidance_scale"] == 3.0


def test_generation_info_after_load_from_checkpoint(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    """A module restored without a Trainer names the checkpoint's epoch and step (not 0), and the sampler, steps and
    guidance of the generate() call that made the images (not only the constructor's defaults)."""
    m = _unet(vae_ckpt, tiny_text_encoder, sampler="dpm", guidance_scale=3.0)
    tr = _trainer(tmp_path, max_epochs=2, max_steps=3, enable_checkpointing=False)
    tr.fit(m, make_loader(kvasir_samples))
    tr.save_checkpoint(tmp_path / "u.ckpt")
    loaded = MSDMUNetModule.load_from_checkpoint(tmp_path / "u.ckpt")
    info = loaded.generation_info()
    assert info["revision"] == f"epoch={tr.current_epoch},step=3" and tr.global_step == 3
    assert info["sampler"] == "dpm++" and info["guidance_scale"] == 3.0  # the canonical name of the alias "dpm"
    loaded.generate(["Generate an image with 1 polyp."], seed=0, sampler="dpm++sde", num_inference_steps=2,
                    guidance_scale=2.0)
    info = loaded.generation_info()
    assert (info["sampler"], info["steps"], info["guidance_scale"]) == ("dpm++sde", 2, 2.0)
    assert info["revision"] == f"epoch={tr.current_epoch},step=3"
