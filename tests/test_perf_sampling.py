"""Fast samplers on MSDMPipeline: DPM-Solver++ (ODE) and SDE-DPM-Solver++ — shape, range, determinism, per-image
seeds independent of the batch, and the call count."""

import pytest
import torch

from msdm.generation import generate_images
from msdm.generators.samplers import make_sampler, sampler_name
from msdm.testing import build_tiny_pipeline

PROMPTS = ["Generate an image with 2 polyps.", "Generate an image containing a green/black box artefact."]


@pytest.fixture
def pipe(tiny_text_encoder):
    return build_tiny_pipeline(tiny_text_encoder)


@pytest.mark.parametrize("sampler", ["dpm++", "dpm++sde"])
def test_fast_sampler_shape_determinism_and_per_image_seeds(pipe, sampler):
    pipe.set_sampler(sampler)
    assert sampler_name(pipe.scheduler) == sampler
    calls = []
    fwd = pipe.unet.forward
    pipe.unet.forward = lambda *a, **k: calls.append(a[0].shape[0]) or fwd(*a, **k)

    def run(batch_size):
        out = [imgs for *_, imgs in generate_images(pipe, PROMPTS, 2, 7, batch_size, num_inference_steps=5)]
        return torch.cat(out)

    a = run(4)
    assert a.shape == (4, 3, 32, 32) and 0 <= a.min() and a.max() <= 1
    assert len(calls) == 5 and calls[0] == 8  # 5 steps = 5 U-Net calls, CFG batched (2 × 4 rows)
    torch.testing.assert_close(run(4), a, atol=0, rtol=0)
    torch.testing.assert_close(run(1), a, atol=2e-3, rtol=0)  # image k depends on seed + k only (±float order)
    other = torch.cat([imgs for *_, imgs in generate_images(pipe, PROMPTS, 2, 8, 4, num_inference_steps=5)])
    assert (other - a).abs().max() > 1e-3


def test_sde_and_ode_samplers_differ_and_keep_the_training_schedule(pipe):
    ode, sde = make_sampler("dpm++"), make_sampler("dpm++sde")
    assert ode.config.algorithm_type == "dpmsolver++" and sde.config.algorithm_type == "sde-dpmsolver++"
    for s in (ode, sde):
        assert (s.config.beta_start, s.config.beta_end, s.config.beta_schedule) == (0.002, 0.02, "scaled_linear")
    g = lambda: [torch.Generator().manual_seed(i) for i in range(2)]  # noqa: E731
    a = pipe.set_sampler("dpm++")(PROMPTS, num_inference_steps=4, generator=g(), output_type="pt").images
    b = pipe.set_sampler("dpm++sde")(PROMPTS, num_inference_steps=4, generator=g(), output_type="pt").images
    assert (a - b).abs().max() > 1e-3
