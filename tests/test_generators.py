"""The generator contract (msdm.generators): every generator draws image i from seed seeds[i], so an image is the
same in any batch and on any rank; the sampler registry feeds every command; one writer makes every folder."""

import argparse

import numpy as np
import pytest
import torch

from msdm.generators import (
    SAMPLERS,
    Generator,
    ModuleGenerator,
    MSDMGenerator,
    RenderGenerator,
    Sampler,
    default_steps,
    make_sampler,
    prompt_major,
    register_sampler,
    sampler_choices,
    sampler_name,
    write_challenge_folder,
)
from msdm.lora.testing import write_tiny_flux, write_tiny_kandinsky_decoder, write_tiny_kandinsky_prior
from msdm.testing import build_tiny_pipeline

PROMPTS = ["Generate an image containing a polyp.", "Generate an image with no polyps.",
           "Generate an image with 1 instrument."]


def _same_for_any_batch(generator: Generator, prompts, seeds, **tol):
    """Image i equals image i made alone (batch 1), and made in the reversed order (other batch neighbours)."""
    whole = generator.generate(prompts, seeds)
    assert whole.shape[0] == len(prompts) and whole.dtype == torch.float32 and 0 <= whole.min() <= whole.max() <= 1
    alone = torch.cat([generator.generate([p], [s]) for p, s in zip(prompts, seeds)])
    torch.testing.assert_close(whole, alone, **tol)
    reversed_ = generator.generate(prompts[::-1], seeds[::-1]).flip(0)
    torch.testing.assert_close(whole, reversed_, **tol)
    return whole


# ------------------------------------------------------------------------------------------------ the registry
def test_every_registered_sampler_round_trips_and_has_default_steps():
    for name in SAMPLERS:
        s = make_sampler(name)
        assert sampler_name(s) == name and default_steps(name) == default_steps(s) > 0
    assert default_steps("ddim") == 150 and default_steps("dpm++sde") == 20  # the reference / the fast sampler


def test_a_new_sampler_is_one_registry_entry_and_every_command_offers_it(monkeypatch):
    from diffusers import UniPCMultistepScheduler

    from msdm.commands import export, generate, quickstart

    monkeypatch.setitem(SAMPLERS, "unipc", None)  # restored after the test
    register_sampler(Sampler("unipc", lambda c: UniPCMultistepScheduler.from_config(c), 12, "UniPC",
                             matches=lambda s: type(s).__name__ == "UniPCMultistepScheduler"))
    assert "unipc" in sampler_choices() and default_steps("unipc") == 12
    assert sampler_name(make_sampler("unipc")) == "unipc"
    for command in (generate, export, quickstart):
        parser = argparse.ArgumentParser()
        command.add_arguments(parser)
        choices = next(a.choices for a in parser._actions if a.dest == "sampler")
        assert "unipc" in choices, command.NAME


# ------------------------------------------------------------------------------------------------ seeding
def test_msdm_generator_seeds_each_image(tiny_text_encoder):
    gen = MSDMGenerator(build_tiny_pipeline(tiny_text_encoder), sampler="dpm++", steps=2, batch_size=2)
    images = _same_for_any_batch(gen, PROMPTS, [5, 6, 7], atol=2e-3, rtol=0)
    assert not torch.allclose(images[0], images[1])  # another seed, another image
    info = gen.info()
    assert info["sampler"] == "dpm++" and info["steps"] == 2 and info["guidance_scale"] == 4.5


def test_render_generators_seed_each_image_exactly():
    for mode in ("follow", "contradict", "scenes", "ignore"):
        gen = RenderGenerator(mode, 32)
        _same_for_any_batch(gen, PROMPTS, [3, 4, 5], atol=0, rtol=0)
        assert gen.info()["model"] == f"render:{mode}"
    ignore = RenderGenerator("ignore", 32).generate(PROMPTS[:2], [9, 9])
    assert torch.equal(ignore[0], ignore[1])  # the prompt plays no part


@pytest.fixture(scope="module")
def tiny_lora_bases(tmp_path_factory):
    root = tmp_path_factory.mktemp("bases")
    return {"flux": write_tiny_flux(root / "flux"), "prior": write_tiny_kandinsky_prior(root / "prior"),
            "decoder": write_tiny_kandinsky_decoder(root / "decoder")}


def _lora_module(kind, bases):
    from lightning_modules import FluxLoRAModule, KandinskyLoRAModule

    torch.manual_seed(0)
    if kind == "flux":
        m = FluxLoRAModule(model=bases["flux"], rank=4, frozen_dtype="float32", max_sequence_length=16, height=32,
                           width=32, num_inference_steps=2, text_cache_dir="memory", export_lora=False)
    else:
        m = KandinskyLoRAModule(stage="decoder", prior_model=bases["prior"], decoder_model=bases["decoder"], rank=4,
                                height=32, width=32, num_inference_steps=2, prior_num_inference_steps=2,
                                export_lora=False)
    with torch.no_grad():  # a non-zero LoRA (B starts at 0)
        for n, p in m.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return m


@pytest.mark.parametrize("kind", ["flux", "kandinsky"])
def test_lora_modules_seed_each_image_whatever_the_batch(kind, tiny_lora_bases):
    """Before the generator contract the LoRA modules drew a whole call from one generator: image 2 of a call
    depended on images 0 and 1. Now image i comes from seeds[i], alone or in any batch."""
    m = _lora_module(kind, tiny_lora_bases)
    gen = ModuleGenerator(m)
    images = _same_for_any_batch(gen, PROMPTS, [11, 12, 13], atol=1e-4, rtol=0)
    by_generate = m.generate(PROMPTS, num_images_per_prompt=2, seed=11)  # prompt-major, image k from seed 11 + k
    torch.testing.assert_close(by_generate[0], images[0], atol=1e-4, rtol=0)
    torch.testing.assert_close(by_generate[2], m.generate_with_seeds([PROMPTS[1]], [13])[0], atol=1e-4, rtol=0)
    assert gen.info()["lora_rank"] == 4


# ------------------------------------------------------------------------------------------------ the writer
def test_one_writer_ranks_union_equals_one_process(tmp_path):
    from PIL import Image

    from msdm.provenance import read_record, verify

    gen = RenderGenerator("follow", 24)
    assert write_challenge_folder(gen, PROMPTS, tmp_path / "one", 3, seed=7, batch_size=4) == 9
    for rank in (1, 0):  # independent processes: whichever finishes last completes the folder
        write_challenge_folder(gen, PROMPTS, tmp_path / "two", 3, seed=7, rank=rank, world=2, batch_size=1)
        assert (tmp_path / "two" / "provenance.json").exists() == (rank == 0)
    assert verify(tmp_path / "one").ok and verify(tmp_path / "two").ok
    for p in sorted((tmp_path / "one").glob("*.png")):
        assert np.array_equal(np.asarray(Image.open(p)), np.asarray(Image.open(tmp_path / "two" / p.name)))
    rec = read_record(tmp_path / "one" / "prompt0002_img0003.png")
    assert rec["seed"] == 7 + 5 and rec["prompt"] == PROMPTS[1] and rec["model"] == "render:follow"


def test_prompt_major_seed_rule():
    prompts, seeds = prompt_major(["a", "b"], 2, seed=10)
    assert prompts == ["a", "a", "b", "b"] and seeds == [10, 11, 12, 13]
