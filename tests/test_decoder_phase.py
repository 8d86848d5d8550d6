"""The VAE's decoder phase (``MSDMVAEModule(decoder_steps=...)``, :mod:`msdm.training.decoder_phase`): the last
steps train the decoder alone at its own learning rate on noisy latents; the encoder, so the latents a U-Net trains
on, are exactly those of the joint phase, also when the phase resumes a finished run."""

import lightning.pytorch as pl
import pytest
import torch
from conftest import make_loader

from msdm.training.decoder_phase import noisy_latents, phase_start


def test_noisy_latents_span_clean_to_max_noise_of_the_latent_std():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(4000, 8, 4, 4, generator=g) * 3.0
    torch.testing.assert_close(noisy_latents(z, 0.0), z, atol=0, rtol=0)
    d = noisy_latents(z, 0.2, torch.Generator().manual_seed(1)) - z
    per_sample = d.flatten(1).std(dim=1) / z.std()
    # per-sample noise std ~ U(0, 0.2) x std(z): mean 0.1, spread over the whole range, never above 0.2
    assert per_sample.max() <= 0.2 * 1.2 and per_sample.min() < 0.02 and per_sample.max() > 0.18
    assert abs(float(per_sample.mean()) - 0.1) < 0.01


def test_the_phase_needs_joint_steps_first():
    assert phase_start(1800, 600) == 1200 and phase_start(10, 0) == 10
    with pytest.raises(ValueError, match="fewer"):
        phase_start(600, 600)


def _fit(samples, steps, root, resume=None, callbacks=(), **kw):
    from lightning_modules import MSDMVAEModule

    pl.seed_everything(0)
    m = MSDMVAEModule(preset="tiny", lr=1e-3, test_fid=False, **kw)
    lrs = []

    class LR(pl.Callback):
        def on_train_batch_end(self, trainer, module, *a):
            lrs.append(trainer.optimizers[0].param_groups[0]["lr"])

    tr = pl.Trainer(accelerator="cpu", max_steps=steps, logger=False, enable_progress_bar=False,
                    enable_model_summary=False, default_root_dir=root, enable_checkpointing=bool(callbacks),
                    limit_val_batches=0, num_sanity_val_steps=0, callbacks=[LR(), *callbacks])
    tr.fit(m, make_loader(samples), ckpt_path=resume)
    return m, tr, lrs


def _part(module, prefix):
    return {k: v.clone() for k, v in module.vae.state_dict().items() if k.startswith(prefix)}


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


PHASE = {"decoder_steps": 3, "decoder_lr": 1e-4, "decoder_noise": 0.2}


def test_the_decoder_phase_trains_only_the_decoder_at_its_rate_and_resumes_exactly(kvasir_samples, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    joint, _, _ = _fit(kvasir_samples, 3, tmp_path / "a")
    ck = ModelCheckpoint(dirpath=tmp_path / "ck", every_n_train_steps=1, save_top_k=-1)
    phased, _, lrs = _fit(kvasir_samples, 6, tmp_path / "b", callbacks=[ck], **PHASE)
    assert lrs == [1e-3] * 3 + [1e-4] * 3
    assert _equal(_part(joint, "enc_"), _part(phased, "enc_"))  # the latents are the joint phase's
    dec_j, dec_p = _part(joint, "dec_"), _part(phased, "dec_")
    assert any(not torch.equal(dec_j[k], dec_p[k]) for k in dec_j)  # the decoder went on training
    # the learning rate follows the step: a run resumed at the phase's start (or inside it) is the same run
    for step in (3, 4):
        path = next((tmp_path / "ck").glob(f"*step={step}.ckpt"))
        resumed, _, lrs2 = _fit(kvasir_samples, 6, tmp_path / f"r{step}", resume=str(path), **PHASE)
        assert lrs2 == [1e-4] * (6 - step)
        assert _equal(resumed.vae.state_dict(), phased.vae.state_dict()), step


def test_the_phase_added_to_a_finished_run_keeps_its_encoder(kvasir_samples, tmp_path):
    joint, tr, _ = _fit(kvasir_samples, 3, tmp_path / "a")
    tr.save_checkpoint(tmp_path / "joint.ckpt")
    more, _, lrs = _fit(kvasir_samples, 6, tmp_path / "b", resume=str(tmp_path / "joint.ckpt"), **PHASE)
    assert lrs == [1e-4] * 3
    assert _equal(_part(joint, "enc_"), _part(more, "enc_"))


def test_a_smoke_run_trains_the_joint_phase_and_a_too_short_run_is_refused(kvasir_samples, tmp_path):
    from lightning_modules import MSDMVAEModule

    m = MSDMVAEModule(preset="tiny", test_fid=False, decoder_steps=600)
    pl.Trainer(accelerator="cpu", fast_dev_run=True, logger=False, enable_progress_bar=False,
               enable_model_summary=False, default_root_dir=tmp_path).fit(m, make_loader(kvasir_samples))
    with pytest.raises(ValueError, match="fewer than the run's steps"):
        _fit(kvasir_samples, 4, tmp_path / "short", decoder_steps=600)
