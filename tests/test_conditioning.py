"""The conditioning diagnostic: prompt_sensitivity's values and the ConditioningDiagnostic callback."""

import lightning.pytorch as pl
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger

from datamodules.synthetic import SyntheticGIDataModule
from lightning_modules import MSDMUNetModule
from lightning_modules.callbacks.adherence import ConditioningDiagnostic
from msdm.diffusion import training_scheduler
from msdm.metrics.adherence.conditioning import prompt_sensitivity
from msdm.models.presets import build_unet
from msdm.models.text_encoder import encode_text, load_text_encoder

PROMPTS = ["Generate an image containing text.", "Generate an image not containing text.",
           "Generate an image with no polyps."]


@pytest.fixture(scope="module")
def parts(tiny_text_encoder):
    torch.manual_seed(0)
    tok, enc = load_text_encoder(tiny_text_encoder)
    unet = build_unet("tiny", text_embed_dim=32).eval()
    # conv_out starts at zero (the U-Net predicts 0 for everything): give it weights so outputs differ
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)
    return unet, (lambda p: encode_text(tok, enc, p))


def _reference(unet, latents, encode, prompts, t, seed):
    """The definition, written out: relative L2 of ε(p) − ε(∅), and of ε(p) − ε(q), on the same x_t."""
    sch = training_scheduler()
    noise = torch.randn(latents.shape, generator=torch.Generator().manual_seed(seed))
    tt = torch.full((latents.shape[0],), t)
    x = sch.add_noise(latents, noise, tt)

    def eps(p):
        s, m = encode([p] * latents.shape[0])
        return unet(x, tt, s, m).sample

    e0 = eps("")
    es = [eps(p) for p in prompts]
    vs = sum(float((e - e0).norm() / e0.norm()) for e in es) / len(es)
    pairs = [(i, j) for i in range(len(es)) for j in range(i + 1, len(es))]
    between = sum(float((es[i] - es[j]).norm() / e0.norm()) for i, j in pairs) / len(pairs)
    return vs, between


def test_prompt_sensitivity_matches_definition(parts):
    unet, encode = parts
    latents = torch.randn(4, 4, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = prompt_sensitivity(unet, latents, encode, PROMPTS, training_scheduler(), timesteps=(100, 700), seed=3)
        for t in (100, 700):
            vs, between = _reference(unet, latents, encode, PROMPTS, t, 3)
            assert out[f"vs_uncond@{t}"] == pytest.approx(vs, rel=1e-5)
            assert out[f"between_prompts@{t}"] == pytest.approx(between, rel=1e-5)
    assert out["vs_uncond"] == pytest.approx((out["vs_uncond@100"] + out["vs_uncond@700"]) / 2)
    assert out["between_prompts"] > 0


def test_prompt_sensitivity_is_zero_when_text_is_cut(parts):
    unet, encode = parts
    latents = torch.randn(2, 4, 16, 16)

    def zero_text(prompts):
        s, m = encode(prompts)
        return torch.zeros_like(s), m

    with torch.no_grad():
        out = prompt_sensitivity(unet, latents, zero_text, PROMPTS, training_scheduler(), timesteps=(500,))
    assert out["vs_uncond"] == 0.0 and out["between_prompts"] == 0.0


def test_callback_logs_during_training(tiny_text_encoder, tmp_path):
    pl.seed_everything(0)
    dm = SyntheticGIDataModule(num_train=16, num_val=8, resolution=32, batch_size=8, caption_facts=3)
    with pytest.warns(UserWarning, match="UNTRAINED VAE"):  # the diagnostic needs no trained VAE
        module = MSDMUNetModule(preset="tiny", text_encoder=tiny_text_encoder, max_length=32, lr=1e-3,
                                sample_prompts=PROMPTS, ema_decay=0.9)
    cb = ConditioningDiagnostic(every_n_steps=2, num_latents=4, timesteps=(300, 800))
    trainer = pl.Trainer(max_steps=4, accelerator="cpu", logger=CSVLogger(tmp_path), callbacks=[cb],
                         enable_progress_bar=False, enable_model_summary=False, enable_checkpointing=False,
                         limit_val_batches=1, check_val_every_n_epoch=2, num_sanity_val_steps=0)
    trainer.fit(module, datamodule=dm)
    assert cb._latents.shape == (4, 4, 16, 16)
    assert set(cb.last) >= {"vs_uncond", "between_prompts", "vs_uncond@300", "between_prompts@800"}
    text = (tmp_path / "lightning_logs" / "version_0" / "metrics.csv").read_text()
    header = text.splitlines()[0].split(",")
    assert "cond/vs_uncond" in header and "cond/between_prompts@800" in header
    # logged at steps 2 and 4 (training) and at the validation at step 4
    rows = [r.split(",") for r in text.splitlines()[1:]]
    col = header.index("cond/vs_uncond")
    assert sum(1 for r in rows if r[col]) >= 2
