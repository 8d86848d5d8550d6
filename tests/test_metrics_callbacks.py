"""GenerationMetrics with a tiny MSDMUNetModule: logs FID / FBD / Fidelity / Agreement / Diversity in a
``fast_dev_run``, equal to the metrics computed by hand from the same generated images; real features are cached;
the extractors never reach the model checkpoint."""

import warnings

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
from conftest import make_loader

from lightning_modules import MSDMUNetModule
from lightning_modules.callbacks import GenerationMetrics
from msdm.metrics.realism.challenge import challenge_scores, real_features_by_prompt
from msdm.metrics.realism.features import BiomedCLIPExtractor, InceptionExtractor
from msdm.metrics.realism.frechet import frechet_distance
from msdm.metrics.realism.kid import kernel_inception_distance
from msdm.metrics.realism.prdc import manifold_scores
from msdm.metrics.testing import write_tiny_biomedclip_transformers, write_tiny_inception

PROMPTS = ["Generate an image containing a polyp.", "Show a picture with one polyp.",
           "Generate an image with 1 instrument.", "Display an image with one instrument."]


@pytest.fixture(scope="module")
def extractor_files(tmp_path_factory):
    root = tmp_path_factory.mktemp("extractors")
    return {"biomedclip": write_tiny_biomedclip_transformers(root / "biomedclip"),
            "inception": write_tiny_inception(root / "inception.pt", feature_dim=16)}


def _module(tiny_text_encoder):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # vae=None: an untrained VAE, fine for a plumbing test
        return MSDMUNetModule(preset="tiny", vae=None, text_encoder=tiny_text_encoder, max_length=16,
                              num_inference_steps=2, latent_scaling=1.0)


def _callback(extractor_files, cache_dir, ids):
    mapping = {"1": ids[0:3], "2": ids[0:3], "3": ids[3:6], "4": ids[3:6]}
    return GenerationMetrics(prompts=PROMPTS, num_images_per_prompt=3, seed=7, real_mapping=mapping,
                             paraphrase_pairs=True, inception=extractor_files["inception"],
                             biomedclip=extractor_files["biomedclip"], cache_dir=str(cache_dir), batch_size=8), mapping


def _trainer(tmp_path, callbacks, **kw):
    kw.setdefault("enable_progress_bar", False)
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=tmp_path, enable_model_summary=False,
                      callbacks=callbacks, **kw)


def test_fast_dev_run_logs_the_metrics(tiny_text_encoder, kvasir_samples, extractor_files, tmp_path, capsys):
    pl.seed_everything(0)
    module = _module(tiny_text_encoder)
    ids = [s["id"] for s in kvasir_samples]
    cb, mapping = _callback(extractor_files, tmp_path / "cache", ids)
    trainer = _trainer(tmp_path, [cb], fast_dev_run=True, enable_progress_bar=True)
    trainer.fit(module, make_loader(kvasir_samples), make_loader(kvasir_samples, shuffle=False))
    assert "val metrics: generating (epoch 0)" in capsys.readouterr().err  # sampling shows its progress
    logged = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
    assert set(logged) >= {"val/fid", "val/fbd", "val/fidelity", "val/agreement", "val/diversity"}
    assert all(np.isfinite(v) for v in logged.values())

    # the same numbers by hand: same images (seeded per image), same real images (the val loader's, in [0, 1])
    images = module.generate(PROMPTS, num_images_per_prompt=3, seed=7)
    real = torch.stack([(s["pixel_values"] + 1) / 2 for s in kvasir_samples])
    inc = InceptionExtractor(extractor_files["inception"])
    bio = BiomedCLIPExtractor(extractor_files["biomedclip"])
    assert logged["val/fid"] == pytest.approx(frechet_distance(inc.extract(images), inc.extract(real)), rel=1e-6)
    gen = bio.extract(images).numpy()
    by_prompt = {p + 1: gen[3 * p:3 * p + 3] for p in range(4)}
    real_by_id = dict(zip(ids, bio.extract(real).numpy()))
    expected = challenge_scores(by_prompt, real_features_by_prompt(real_by_id, mapping, by_prompt))
    for k, key in (("fidelity", "fidelity"), ("agreement", "agreement"), ("diversity", "diversity"), ("fbd", "FBD")):
        assert logged[f"val/{k}"] == pytest.approx(expected[key], rel=1e-5), k
    # KID and P/R/D/C on the same Inception features, with their n and interval bounds (issue 21)
    gen_inc, real_inc = inc.extract(images).numpy(), inc.extract(real).numpy()
    kid = kernel_inception_distance(real_inc, gen_inc)
    assert logged["val/kid"] == pytest.approx(kid.value, rel=1e-5, abs=1e-7)
    assert logged["val/kid_low"] <= logged["val/kid"] <= logged["val/kid_high"]
    s = manifold_scores(real_inc, gen_inc)
    for k in ("precision", "recall", "density", "coverage"):
        assert logged[f"val/{k}"] == pytest.approx(getattr(s, k), rel=1e-6), k
        assert logged[f"val/{k}_low"] <= logged[f"val/{k}"] <= logged[f"val/{k}_high"], k
    assert logged["val/n_generated"] == 12 and logged["val/n_real"] == len(ids)
    assert cb.last_figures["KID"]["n_generated"] == 12 and "interval" in cb.last_figures["precision"]

    # extractor weights are on the callback only: the checkpoint holds what trains, the callback state is empty
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    ckpt = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert {k.split(".")[0] for k in ckpt["state_dict"]} == {"unet", "latent_scale"}
    assert all(not v for k, v in ckpt.get("callbacks", {}).items() if "GenerationMetrics" in k)
    assert not any(isinstance(m, torch.nn.Module) and "Extractor" in type(m).__name__ for m in module.modules())


def test_real_features_are_cached_across_runs(tiny_text_encoder, kvasir_samples, extractor_files, tmp_path):
    pl.seed_everything(0)
    module = _module(tiny_text_encoder)
    ids = [s["id"] for s in kvasir_samples]
    cache = tmp_path / "cache"
    cb, _ = _callback(extractor_files, cache, ids)
    val = make_loader(kvasir_samples, shuffle=False)
    _trainer(tmp_path, [cb], logger=False).validate(module, val, verbose=False)
    files = {p: p.stat().st_mtime_ns for p in cache.glob("*.npz")}
    assert len(files) == 2  # inception + biomedclip
    cb2, _ = _callback(extractor_files, cache, ids)  # a fresh callback (new process, next run): reads the cache
    out = _trainer(tmp_path, [cb2], logger=False).validate(module, val, verbose=False)[0]
    assert {p: p.stat().st_mtime_ns for p in cache.glob("*.npz")} == files
    assert out["val/fbd"] == pytest.approx(cb.last_metrics["val/fbd"], rel=1e-6)  # Lightning logs float32
    # other real images (fewer of them): another fingerprint, a new cache entry
    cb3, _ = _callback(extractor_files, cache, ids)
    cb3.max_real_images = 6
    _trainer(tmp_path, [cb3], logger=False).validate(module, val, verbose=False)
    assert len(list(cache.glob("*.npz"))) == 4


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_processes_log_the_single_process_values(tiny_text_encoder, kvasir_dir, extractor_files, tmp_path):
    """Prompts sharded over 2 gloo ranks, compute() on both: the logged values equal a 1-process run (no hang)."""
    from conftest import run_rank_script

    results = {}
    for devices in (1, 2):
        out = tmp_path / f"out{devices}"
        out.mkdir()
        results[devices] = run_rank_script("ddp_metrics_callback.py", kvasir_dir / "images", tiny_text_encoder,
                                           extractor_files["biomedclip"], extractor_files["inception"],
                                           tmp_path / "cache", out, devices, cwd=tmp_path, out=out, world_size=devices)
    single = results[1][0]["metrics"]
    assert set(single) >= {"val/fid", "val/fbd", "val/fidelity", "val/agreement", "val/diversity", "val/kid",
                           "val/precision", "val/recall", "val/density", "val/coverage"}
    for rank in results[2]:
        assert rank["world_size"] == 2
        for k, v in single.items():
            assert rank["metrics"][k] == pytest.approx(v, rel=1e-6), k


def test_msdm_test_with_a_checkpoint_reports_the_metrics(tiny_text_encoder, kvasir_samples, extractor_files, tmp_path,
                                                         monkeypatch):
    """`msdm test -c cfg --ckpt_path ckpt`: the callbacks report the same metrics at test end through LightningCLI."""
    import yaml

    from lightning_modules.cli import run_lightning_cli

    monkeypatch.chdir(tmp_path)
    pl.seed_everything(0)
    module = _module(tiny_text_encoder)
    trainer = _trainer(tmp_path, [], max_steps=1, logger=False, enable_checkpointing=False)
    trainer.fit(module, make_loader(kvasir_samples))
    trainer.save_checkpoint(tmp_path / "unet.ckpt")

    cfg = {
        "model": {"class_path": "lightning_modules.MSDMUNetModule",
                  "init_args": {"preset": "tiny", "vae": None, "text_encoder": tiny_text_encoder, "max_length": 16,
                                "num_inference_steps": 2, "latent_scaling": 1.0, "image_size": 32}},
        "data": {"class_path": "datamodules.SyntheticGIDataModule",
                 "init_args": {"num_train": 8, "num_val": 6, "resolution": 32, "batch_size": 3}},
        "trainer": {"accelerator": "cpu", "logger": False, "enable_progress_bar": False, "callbacks": [
            {"class_path": "lightning_modules.GenerationMetrics",
             "init_args": {"prompts": PROMPTS[:2], "num_images_per_prompt": 3, "inception": extractor_files["inception"],
                           "biomedclip": extractor_files["biomedclip"], "cache_dir": str(tmp_path / "cache")}}]},
    }
    (tmp_path / "test.yaml").write_text(yaml.safe_dump(cfg))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cli = run_lightning_cli(["test", "-c", str(tmp_path / "test.yaml"), "--ckpt_path", str(tmp_path / "unet.ckpt")])
    logged = {k: float(v) for k, v in cli.trainer.callback_metrics.items() if k.startswith("test/")}
    assert {"test/loss", "test/fid", "test/fbd"} <= set(logged), logged
    assert all(np.isfinite(v) for v in logged.values())
    cb = next(c for c in cli.trainer.callbacks if isinstance(c, GenerationMetrics))
    assert cb.last_metrics["test/fid"] == pytest.approx(logged["test/fid"])
