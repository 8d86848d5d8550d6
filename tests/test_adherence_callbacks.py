"""AdherenceCallback (MSDMUNetModule) and VAECheck (MSDMVAEModule) at validation end on the synthetic DataModule."""

from __future__ import annotations

import lightning.pytorch as pl
import pytest
import torch

from datamodules.synthetic import SyntheticGIDataModule
from lightning_modules import AdherenceCallback, MSDMUNetModule, MSDMVAEModule, VAECheck
from msdm.metrics.adherence import DEFAULT_PAIRS, SceneDetector, module_generate_fn, paired_adherence


def _dm():
    return SyntheticGIDataModule(num_train=8, num_val=8, resolution=32, batch_size=4)


def _trainer(tmp_path, callbacks, **kw):
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_progress_bar=False,
                      enable_model_summary=False, logger=False, enable_checkpointing=False, callbacks=callbacks, **kw)


@pytest.fixture(scope="module")
def vae_run(tmp_path_factory):
    d = tmp_path_factory.mktemp("vae_check")
    pl.seed_everything(0)
    check = VAECheck(num_images=8)
    module = MSDMVAEModule(preset="tiny", lr=2e-3)
    trainer = _trainer(d, [check], fast_dev_run=True)
    trainer.fit(module, datamodule=_dm())
    trainer.save_checkpoint(d / "vae.ckpt")
    return d / "vae.ckpt", trainer, check


def test_vae_check_logs_agreement_and_rates_under_fast_dev_run(vae_run):
    _, trainer, check = vae_run
    logged = trainer.callback_metrics
    for attr in ("box", "text", "instrument", "polyp", "polyp_count", "procedure"):
        assert f"vae_check/{attr}" in logged, sorted(logged)
        assert 0.0 <= float(logged[f"vae_check/{attr}"]) <= 1.0
    for attr in DEFAULT_PAIRS:
        assert f"vae_check/{attr}_rate_inputs" in logged and f"vae_check/{attr}_rate_reconstructions" in logged
    assert check._images.shape[0] == 4  # fast_dev_run: at most 4 images
    # the detector judges the renders themselves correctly: the inputs' box rate is the scenes' box rate
    val = _dm()
    val.setup("validate")
    boxes = [val.val_set.scene(i)[2]["box_artefact"] for i in range(4)]
    assert check.last_result["box"]["rate_inputs"] == pytest.approx(sum(boxes) / 4)


def test_adherence_callback_logs_the_paired_gaps_under_fast_dev_run(vae_run, tiny_text_encoder, tmp_path):
    vae_ckpt, _, _ = vae_run
    cb = AdherenceCallback(num_images=4, num_inference_steps=3)
    module = MSDMUNetModule(preset="tiny", vae=str(vae_ckpt), text_encoder=tiny_text_encoder, max_length=16,
                            image_size=32, num_inference_steps=3)
    trainer = _trainer(tmp_path, [cb], fast_dev_run=True)
    trainer.fit(module, datamodule=_dm())
    logged = trainer.callback_metrics
    for attr in DEFAULT_PAIRS:
        for key in ("gap", "pos", "neg"):
            assert f"adherence/{key}_{attr}" in logged, sorted(logged)
    assert "adherence/mean_gap" in logged
    res = cb.last_result
    assert all(res[a]["n"] == 2 for a in DEFAULT_PAIRS)  # fast_dev_run: 2 images per prompt
    assert float(logged["adherence/mean_gap"]) == pytest.approx(res["mean_gap"])
    # the same images as paired mode through module.generate with the callback's settings (seeds 0, 1; 2 steps)
    direct = paired_adherence(module_generate_fn(module, num_inference_steps=2), num_images=2, seed=0,
                              detector=cb._detector)
    assert {a: direct[a]["pos_count"] for a in DEFAULT_PAIRS} == {a: res[a]["pos_count"] for a in DEFAULT_PAIRS}
    assert {a: direct[a]["neg_count"] for a in DEFAULT_PAIRS} == {a: res[a]["neg_count"] for a in DEFAULT_PAIRS}


def test_module_generate_fn_matches_generate_per_seed(vae_run, tiny_text_encoder):
    vae_ckpt, _, _ = vae_run
    module = MSDMUNetModule(preset="tiny", vae=str(vae_ckpt), text_encoder=tiny_text_encoder, max_length=16,
                            image_size=32, num_inference_steps=2)
    module.latent_scale.fill_(1.0)
    gen = module_generate_fn(module)
    prompts = ["Generate an image containing text.", "Generate an image not containing text."]
    got = gen([prompts[0], prompts[0], prompts[1]], [3, 4, 3])
    ref_pos = module.generate([prompts[0]] * 2, seed=3)
    ref_neg = module.generate([prompts[1]], seed=3)
    torch.testing.assert_close(got, torch.cat([ref_pos, ref_neg]))
    assert isinstance(SceneDetector().detect(got), list)


@pytest.mark.ddp
@pytest.mark.slow
def test_adherence_callback_under_two_process_ddp_equals_one_process(tmp_path, tiny_text_encoder):
    """Each rank generates its block of seeds; the summed counts equal one process generating every image."""
    from conftest import run_rank_script

    ranks = run_rank_script("ddp_adherence_callback.py", tiny_text_encoder, tmp_path, cwd=tmp_path, timeout=900)
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["result"] == ranks[1]["result"] and ranks[0]["logged"] == ranks[1]["logged"]
    single = ranks[0]["single"]
    for attr in DEFAULT_PAIRS:
        got = ranks[0]["result"][attr]
        assert (got["pos_count"], got["neg_count"], got["n"]) == (single[attr]["pos_count"],
                                                                  single[attr]["neg_count"], 5), attr
    assert ranks[0]["logged"]["adherence/mean_gap"] == pytest.approx(single["mean_gap"])
