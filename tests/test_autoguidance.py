"""Autoguidance as a training option (``MSDMUNetModule(autoguidance=f)``): the EMA weights at fraction ``f`` of the
run become a frozen weaker U-Net that travels with checkpoints (resume and ``load_from_checkpoint``) and exported
pipelines, and guides sampling there by default; ``autoguidance=False`` in a pipeline call is classifier-free
guidance again."""

import copy

import lightning.pytorch as pl
import pytest
import torch
from conftest import make_loader

PROMPTS = ["Generate an image containing a green/black box artefact.", "Generate an image with 1 polyp."]
STEPS = 6


def _vae(path) -> str:
    """A tiny VAE checkpoint whose zero-initialised output convolution is filled, so that images show the latents."""
    from lightning_modules import MSDMVAEModule

    pl.seed_everything(1)
    vae = MSDMVAEModule(preset="tiny")
    with torch.no_grad():
        vae.vae.out.weight.normal_(0, 0.3)
    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(vae)
    tr.save_checkpoint(path)
    return str(path)


def _module(vae, te, **kw):
    from lightning_modules import MSDMUNetModule

    return MSDMUNetModule(preset="tiny", vae=vae, text_encoder=te, max_length=16, image_size=32,
                          num_inference_steps=3, lr=1e-3, ema_decay=0.9, guidance_scale=2.0, **kw)


class _RecordEMA(pl.Callback):
    """The sampling (EMA) weights after every optimizer step, recorded independently of the module's snapshot."""

    def __init__(self):
        self.states = {}

    def on_train_batch_end(self, trainer, module, *args):
        with module.ema_weights():
            self.states[trainer.global_step] = copy.deepcopy(module.unet.state_dict())


def _trainer(tmp_path, steps, **kw):
    return pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                      enable_model_summary=False, default_root_dir=tmp_path, **kw)


@pytest.fixture(scope="module")
def run(tmp_path_factory, kvasir_samples, tiny_text_encoder):
    tmp = tmp_path_factory.mktemp("ag")
    vae = _vae(tmp / "vae.ckpt")
    pl.seed_everything(0)
    m = _module(vae, tiny_text_encoder, autoguidance=0.5)
    rec = _RecordEMA()
    tr = _trainer(tmp, STEPS, callbacks=[rec], enable_checkpointing=False)
    tr.fit(m, make_loader(kvasir_samples[:16]))
    tr.save_checkpoint(tmp / "unet.ckpt")
    return {"module": m, "ema": rec.states, "dir": tmp, "vae": vae}


def _equal_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_the_weaker_model_is_the_ema_weights_at_the_given_fraction_of_training(run):
    m = run["module"]
    assert m.guide_unet is not None and not any(p.requires_grad for p in m.guide_unet.parameters())
    assert _equal_state(m.guide_unet.state_dict(), run["ema"][STEPS // 2])
    assert not _equal_state(m.guide_unet.state_dict(), run["ema"][STEPS])  # it stopped following the training
    assert "autoguidance" in m.generation_info()["guidance"]


def test_sampling_guides_with_it_and_equals_the_formula_with_the_weaker_model_passed_by_hand(run):
    m = run["module"]
    seeds = [0, 1]
    auto = m.generate_with_seeds(PROMPTS, seeds)
    cfg = m.generate_with_seeds(PROMPTS, seeds, autoguidance=False)
    assert (auto - cfg).abs().max() > 1e-4
    # the pipeline's bad + s·(good − bad), with the weaker model given explicitly instead of as the default
    by_hand = m.generate_with_seeds(PROMPTS, seeds, guide_unet=copy.deepcopy(m.guide_unet))
    torch.testing.assert_close(auto, by_hand, atol=0, rtol=0)


def test_the_weaker_model_travels_with_the_checkpoint_and_the_exported_pipeline(run):
    from lightning_modules import MSDMUNetModule
    from msdm.pipeline import MSDMPipeline

    m = run["module"]
    loaded = MSDMUNetModule.load_from_checkpoint(run["dir"] / "unet.ckpt")
    assert _equal_state(loaded.guide_unet.state_dict(), m.guide_unet.state_dict())
    torch.testing.assert_close(loaded.generate_with_seeds(PROMPTS, [3, 4]), m.generate_with_seeds(PROMPTS, [3, 4]))

    m.export(str(run["dir"] / "pipe"))
    pipe = MSDMPipeline.from_pretrained(run["dir"] / "pipe")
    pipe.set_progress_bar_config(disable=True)
    assert _equal_state(pipe.guide_unet.state_dict(), m.guide_unet.state_dict())
    assert "autoguidance" in pipe.generation_info()["guidance"]

    def images(p, **kw):
        g = [torch.Generator().manual_seed(i) for i in range(2)]
        return p(PROMPTS, num_inference_steps=3, generator=g, output_type="pt", **kw).images

    with m.ema_weights():
        live = m.to_pipeline()
        torch.testing.assert_close(images(pipe), images(live), atol=1e-5, rtol=0)
        torch.testing.assert_close(images(pipe, autoguidance=False), images(live, autoguidance=False), atol=1e-5,
                                   rtol=0)
    assert (images(pipe) - images(pipe, autoguidance=False)).abs().max() > 1e-4


def test_resuming_after_the_snapshot_keeps_it_and_before_it_takes_the_same_one(run, kvasir_samples,
                                                                               tiny_text_encoder, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def fit(resume=None, callbacks=()):
        pl.seed_everything(0)
        m = _module(run["vae"], tiny_text_encoder, autoguidance=0.5)
        tr = _trainer(tmp_path, STEPS, callbacks=list(callbacks))
        tr.fit(m, make_loader(kvasir_samples[:16]), ckpt_path=resume)
        return m

    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    full = fit(callbacks=[ck])
    assert _equal_state(full.guide_unet.state_dict(), run["module"].guide_unet.state_dict())
    for step in (STEPS // 2 - 1, STEPS // 2):  # a checkpoint written before, and one at, the snapshot's step
        path = next((tmp_path / "ck").glob(f"*step={step}.ckpt"))
        resumed = fit(resume=str(path))
        assert _equal_state(resumed.guide_unet.state_dict(), full.guide_unet.state_dict()), step


def test_a_fraction_outside_0_1_is_refused(run, tiny_text_encoder):
    with pytest.raises(ValueError, match="autoguidance"):
        _module(run["vae"], tiny_text_encoder, autoguidance=1.5)
