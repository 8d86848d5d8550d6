"""MSDMPipeline: sampling, save/load round trip, atomic export, decoding without min-max stretching."""

import os

import pytest
import torch

from msdm.io import atomic_directory
from msdm.pipeline import MSDMPipeline
from msdm.testing import build_tiny_pipeline

PROMPTS = ["Generate an image with 2 polyps.", "Generate an image containing a green/black box artefact."]


@pytest.fixture
def pipe(tiny_text_encoder):
    return build_tiny_pipeline(tiny_text_encoder)


def _run(p, **kw):
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    return p(PROMPTS, num_images_per_prompt=2, num_inference_steps=6, generator=g, output_type="pt", **kw).images


def test_output_shape_range_and_determinism(pipe):
    a, b = _run(pipe), _run(pipe)
    assert a.shape == (4, 3, 32, 32) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    pil = pipe(PROMPTS[0], num_inference_steps=2, output_type="pil").images
    assert pil[0].size == (32, 32) and pil[0].mode == "RGB"


def test_guidance_changes_the_result_and_one_means_no_guidance(pipe):
    assert (_run(pipe, guidance_scale=4.5) - _run(pipe, guidance_scale=1.0)).abs().max() > 1e-4


def test_default_guidance_comes_from_the_folder(pipe, tmp_path):
    # a folder remembers the guidance its run sampled with; None (the default) uses it, an explicit value wins
    assert pipe.config.guidance_scale == 4.5
    pipe.register_to_config(guidance_scale=7.0)
    pipe.save_pretrained(tmp_path / "pipe")
    loaded = MSDMPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.config.guidance_scale == 7.0
    torch.testing.assert_close(_run(loaded), _run(loaded, guidance_scale=7.0), atol=0, rtol=0)
    assert loaded.guidance_scale == 7.0
    assert (_run(loaded) - _run(loaded, guidance_scale=4.5)).abs().max() > 1e-4


def test_save_load_round_trip_is_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    assert sorted(n for n in os.listdir(tmp_path / "pipe") if not n.startswith(".")) == [
        "model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
    assert not list(tmp_path.glob("**/*.bin")) and not list(tmp_path.glob("**/*.pt"))  # safetensors only
    loaded = MSDMPipeline.from_pretrained(tmp_path / "pipe")
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(pipe), _run(loaded), atol=0, rtol=0)


def test_interrupted_save_leaves_no_loadable_folder(pipe, tmp_path, monkeypatch):
    def boom(*a, **k):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(type(pipe.unet), "save_pretrained", boom)
    with pytest.raises(KeyboardInterrupt):
        pipe.save_pretrained(tmp_path / "pipe")
    assert not (tmp_path / "pipe").exists()
    assert not list(tmp_path.iterdir())  # the temporary folder is gone too


def test_atomic_directory_keeps_the_old_content_on_failure(tmp_path):
    target = tmp_path / "out"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("v1")
    with pytest.raises(RuntimeError), atomic_directory(target) as d:
        (d / "a.txt").write_text("v2")
        raise RuntimeError
    assert (target / "a.txt").read_text() == "v1"
    with atomic_directory(target) as d:
        (d / "a.txt").write_text("v3")
    assert (target / "a.txt").read_text() == "v3" and len(list(tmp_path.iterdir())) == 1


def test_dpm_solver_shape_and_determinism(pipe):
    pipe.set_sampler("dpm++")
    a, b = _run(pipe), _run(pipe)
    assert a.shape == (4, 3, 32, 32)
    torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_decoding_is_affine_not_min_max(pipe):
    # a constant decoder output must stay constant: (x + 1) / 2, clamped — never stretched per image
    with torch.no_grad():
        pipe.vae.out.weight.zero_()
        pipe.vae.out.bias.fill_(-0.5)
    img = pipe.decode_latents(torch.randn(2, 4, 16, 16))
    torch.testing.assert_close(img, torch.full_like(img, 0.25))


def test_missing_pipeline_gives_offline_fix(tmp_path):
    from msdm.hub import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        MSDMPipeline.from_pretrained("someone/not-here", local_files_only=True)


def test_from_pretrained_in_a_fresh_interpreter(pipe, tmp_path):
    """diffusers only resolves custom classes from imported modules: loading must work before anything is imported."""
    import subprocess
    import sys
    from pathlib import Path

    pipe.save_pretrained(tmp_path / "pipe")
    code = (f"from msdm.pipeline import MSDMPipeline; p = MSDMPipeline.from_pretrained({str(tmp_path / 'pipe')!r}); "
            "print(type(p.unet).__name__, type(p.vae).__name__)")
    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env={**__import__("os").environ, "PYTHONPATH": str(root)})
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["MSDMUNet", "MSDMVAE"]


# ---- diffusers' standard arguments -------------------------------------------------------------------------------


def test_prompt_embeds_give_the_images_of_the_prompt_path(pipe):
    ref = _run(pipe, negative_prompt="blurry")
    pe, pm, ne, nm = pipe.encode_prompt(PROMPTS, num_images_per_prompt=2, negative_prompt="blurry")
    assert pe.shape[0] == 4 and ne.shape == pe.shape and pm.shape == pe.shape[:2]
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    got = pipe(prompt_embeds=pe, prompt_attention_mask=pm, negative_prompt_embeds=ne,
               negative_prompt_attention_mask=nm, num_inference_steps=6, generator=g, output_type="pt").images
    torch.testing.assert_close(got, ref, atol=0, rtol=0)
    # un-repeated embeddings + num_images_per_prompt, and the default negative ("") encoded by the pipeline
    pe1, pm1, _, _ = pipe.encode_prompt(PROMPTS, do_classifier_free_guidance=False)
    g = [torch.Generator().manual_seed(i) for i in range(4)]
    got = pipe(prompt_embeds=pe1, prompt_attention_mask=pm1, num_images_per_prompt=2, num_inference_steps=6,
               generator=g, output_type="pt").images
    torch.testing.assert_close(got, _run(pipe), atol=0, rtol=0)
    with pytest.raises(ValueError, match="exactly one"):
        pipe(PROMPTS, prompt_embeds=pe1)
    with pytest.raises(ValueError, match="same shape"):
        pipe(prompt_embeds=pe1, prompt_attention_mask=pm1, negative_prompt_embeds=ne, negative_prompt_attention_mask=nm)


def test_callback_on_step_end_sees_every_step_and_can_change_the_latents(pipe):
    from diffusers.callbacks import PipelineCallback

    seen = []

    def watch(p, i, t, kwargs):
        seen.append((i, int(t), tuple(kwargs)))
        assert p.num_timesteps == 6 and p.guidance_scale == 4.5 and p.do_classifier_free_guidance
        return kwargs

    torch.testing.assert_close(_run(pipe, callback_on_step_end=watch,
                                    callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"]), _run(pipe),
                               atol=0, rtol=0)
    assert [s[0] for s in seen] == list(range(6)) and seen[0][2] == ("latents", "prompt_embeds")
    assert [s[1] for s in seen] == [int(t) for t in pipe.scheduler.timesteps]

    def zero_last(p, i, t, kwargs):  # what a callback returns replaces the pipeline's tensor
        return {"latents": torch.zeros_like(kwargs["latents"])} if i == p.num_timesteps - 1 else {}

    zeroed = _run(pipe, callback_on_step_end=zero_last)
    torch.testing.assert_close(zeroed, pipe.decode_latents(torch.zeros(4, 4, 16, 16)), atol=1e-6, rtol=0)

    class Stop(PipelineCallback):  # diffusers' callback classes work too; _interrupt ends the loop
        tensor_inputs = ["latents"]

        def callback_fn(self, p, i, t, kwargs):
            seen.append(("stop", i))
            p._interrupt = i == 1
            return kwargs

    seen.clear()
    _run(pipe, callback_on_step_end=Stop())
    assert seen == [("stop", 0), ("stop", 1)]
    with pytest.raises(ValueError, match="not in"):
        _run(pipe, callback_on_step_end=watch, callback_on_step_end_tensor_inputs=["noise"])


def test_diffusion_pipeline_from_pretrained_loads_an_exported_folder(pipe, tmp_path):
    """diffusers' generic loader works once msdm.pipeline is imported; a fresh interpreter without msdm gets diffusers'
    error, and the folder's model_index.json says how to load it."""
    import json
    import subprocess
    import sys

    from diffusers import DiffusionPipeline

    pipe.save_pretrained(tmp_path / "pipe")
    loaded = DiffusionPipeline.from_pretrained(tmp_path / "pipe")
    assert type(loaded) is MSDMPipeline
    loaded.set_progress_bar_config(disable=True)
    torch.testing.assert_close(_run(loaded), _run(pipe), atol=0, rtol=0)
    assert "MSDMPipeline.from_pretrained" in json.loads((tmp_path / "pipe" / "model_index.json").read_text())["_load_with"]
    code = f"from diffusers import DiffusionPipeline; DiffusionPipeline.from_pretrained({str(tmp_path / 'pipe')!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "MSDMPipeline" in proc.stderr
