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


def test_save_load_round_trip_is_identical(pipe, tmp_path):
    pipe.save_pretrained(tmp_path / "pipe")
    assert sorted(os.listdir(tmp_path / "pipe")) == ["model_index.json", "scheduler", "text_encoder", "tokenizer", "unet", "vae"]
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
