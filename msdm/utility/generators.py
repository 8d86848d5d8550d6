"""Where the synthetic images of a utility experiment come from, and writing them in the challenge layout.

A generator is given on the command line as ``[NAME=]SPEC``; the kind is recognised from ``SPEC``:

* ``images`` — a folder already generated in the challenge layout (``prompt{p:04d}_img{i:04d}.png`` +
  ``prompts.json``, as ``msdm generate`` writes it): used as it is;
* ``msdm`` — an MSDM pipeline folder (``msdm export`` / ``msdm quickstart`` output): generated as ``msdm generate``
  generates (:func:`msdm.pipeline.load_generator`: same seeds, sharding over ranks and provenance);
* ``lora`` — a LoRA folder written by msdm's LoRA modules (``msdm_lora.json`` inside, or a run folder with
  ``lora/``): FLUX (one folder) or Kandinsky 2.2 (``prior_dir,decoder_dir``; either alone runs with the other
  stage's base model), loaded into the stock diffusers pipeline with the base model named in ``msdm_lora.json``
  (or ``base_models``);
* ``render:follow`` / ``render:contradict`` — the synthetic-scene renderer, a perfect or a prompt-contradicting
  generator for the synthetic task (:class:`msdm.generators.RenderGenerator`).

Each kind becomes a :class:`msdm.generators.Generator` and is written by the one challenge-folder writer
(:func:`msdm.generators.write_challenge_folder`): image ``k`` (0-based, prompt-major) is drawn from seed ``seed + k``,
so the folder does not depend on batch size or on how many ranks shared the work; every PNG carries its provenance
record and ``provenance.json`` lists every file's hash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from msdm.generators import SEED_RULE, ChallengeFolderWriter, env_rank_world, folder_complete  # noqa: F401
from msdm.generators.writer import folder_generation

KINDS = ("images", "msdm", "lora", "render")


@dataclass
class GeneratorSpec:
    name: str
    kind: str  # one of KINDS
    paths: list[str] = field(default_factory=list)
    mode: str | None = None  # render mode

    def describe(self) -> str:
        return f"{self.name} ({self.kind}: {self.mode or ', '.join(self.paths)})"


def _lora_dir(p: Path) -> Path | None:
    if (p / "msdm_lora.json").is_file():
        return p
    if (p / "lora" / "msdm_lora.json").is_file():
        return p / "lora"
    return None


def parse_generator(text: str) -> GeneratorSpec:
    """``[NAME=]SPEC`` → :class:`GeneratorSpec` (module doc); NAME defaults to the folder name or ``render-MODE``."""
    name, sep, spec = text.partition("=")
    if not sep or "/" in name or name.startswith("render:"):
        name, spec = "", text
    spec = spec.strip()
    if spec.startswith("render:"):
        mode = spec.split(":", 1)[1]
        from msdm.synthetic.prompt_render import RENDER_MODES

        if mode not in RENDER_MODES:
            raise ValueError(f"--generator {text!r}: render mode must be one of {RENDER_MODES}")
        return GeneratorSpec(name or f"render-{mode}", "render", [], mode)
    paths = [Path(os.path.expanduser(s.strip())) for s in spec.split(",") if s.strip()]
    if not paths:
        raise ValueError(f"--generator {text!r}: give a folder (pipeline, LoRA, generated images) or render:follow")
    for p in paths:
        if not p.exists():
            raise FileNotFoundError(f"--generator {text!r}: {p} does not exist")
    name = name or paths[0].name
    if not name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ValueError(f"--generator {text!r}: the name {name!r} may hold letters, digits, '-', '_' and '.' only; "
                         f"write NAME=PATH")
    first = paths[0]
    if len(paths) == 1 and (first / "prompts.json").is_file() and any(first.glob("prompt*_img*.png")):
        return GeneratorSpec(name, "images", [str(first)])
    if len(paths) == 1 and (first / "model_index.json").is_file():
        cls = json.loads((first / "model_index.json").read_text()).get("_class_name", "")
        if cls != "MSDMPipeline":
            raise ValueError(f"{first} is a {cls or 'diffusers'} pipeline; msdm utility generates with MSDM pipeline "
                             f"folders, msdm LoRA folders, or a folder of generated images")
        return GeneratorSpec(name, "msdm", [str(first)])
    loras = [_lora_dir(p) for p in paths]
    if all(loras):
        return GeneratorSpec(name, "lora", [str(d) for d in loras])
    raise ValueError(f"--generator {text!r}: not a generated-images folder (prompts.json + prompt*_img*.png), an MSDM "
                     f"pipeline folder (model_index.json), or LoRA folder(s) (msdm_lora.json)")


def images_per_prompt(groups_prompt_counts: list[int], num_per_class: int) -> int:
    """Images per prompt so that every class gets at least ``num_per_class`` (its prompts share the work)."""
    return max(-(-num_per_class // n) for n in groups_prompt_counts)


def write_challenge_folder(chunks, prompts: list[str], out: Path, num_images: int, seed: int, info: dict,
                           rank: int, world: int) -> int:
    """Deprecated (the one writer is :func:`msdm.generators.write_challenge_folder`): save ``(prompt_idx, image_idx,
    texts, images)`` chunks with provenance and finish the folder; image ``k`` has seed ``seed + k``."""
    writer = ChallengeFolderWriter(out, info, rank, world)
    n = 0
    for p_idx, i_idx, texts, images in chunks:
        writer.write_images(p_idx, i_idx, texts, [seed + p * num_images + i for p, i in zip(p_idx, i_idx)], images)
        n += len(texts)
    writer.close()
    writer.finish(prompts, folder_generation(info, seed, num_images, prompts))
    return n


def render_chunks(prompts: list[str], num_images: int, seed: int, resolution: int, mode: str, rank: int = 0,
                  world: int = 1, batch_size: int = 32):
    """Deprecated: this rank's renders as ``(prompt_idx, image_idx, texts, images)`` chunks
    (:class:`msdm.generators.RenderGenerator`; image ``k`` from seed ``seed + k``)."""
    from msdm.generators import RenderGenerator, expand_prompts, shard
    from msdm.generators.base import chunks

    gen = RenderGenerator(mode, resolution)
    items = expand_prompts(prompts, num_images)
    keys = shard(list(range(len(items))), rank, world)
    for sl in chunks(len(keys), batch_size):
        ks = keys[sl]
        yield ([items[k][0] for k in ks], [items[k][1] for k in ks], [items[k][2] for k in ks],
               gen.generate([items[k][2] for k in ks], [seed + k for k in ks]))


def wait_complete(out: Path, prompts: list[str], num_images: int, timeout_s: float = 3600.0) -> None:
    """Block until every rank's share of ``out`` is written (ranks of a torchrun/SLURM job finish at different
    times, and whichever finishes last writes the folder's files)."""
    import time

    t0 = time.monotonic()
    while not folder_complete(out, prompts, num_images):
        if time.monotonic() - t0 > timeout_s:
            raise TimeoutError(f"{out}: other ranks did not finish generating within {timeout_s:.0f} s")
        time.sleep(2.0)


def materialize(spec: GeneratorSpec, prompts: list[str], out: Path, num_images: int, seed: int = 0,
                resolution: int = 64, steps: int | None = None, guidance_scale: float | None = None,
                sampler: str | None = None, batch_size: int = 16, device: str | None = None, dtype: str = "fp32",
                base_models: dict | None = None, generate_args: list[str] | None = None,
                call_kwargs: dict | None = None) -> Path:
    """The challenge-layout folder of ``spec`` for ``prompts`` × ``num_images`` (generated into ``out`` unless
    ``spec`` is already a folder of images, or ``out`` is complete from an earlier run).

    ``generate_args``: ``msdm generate`` options for MSDM pipelines (``--eta 0.5``, ...), parsed by its own parser.
    """
    if spec.kind == "images":
        return Path(spec.paths[0])
    # What made the folder: reuse it only when all of it is the same (a new seed or step count regenerates).
    settings = {"generator": spec.kind, "paths": [str(Path(p).resolve()) for p in spec.paths], "mode": spec.mode,
                "prompts": prompts, "num_images": num_images, "seed": seed, "resolution": resolution, "steps": steps,
                "guidance_scale": guidance_scale, "sampler": sampler, "dtype": dtype, "base_models": base_models,
                "generate_args": list(generate_args or []), "call_kwargs": call_kwargs}
    record = out.parent / f"{out.name}.settings.json"
    if folder_complete(out, prompts, num_images) and record.is_file() and json.loads(record.read_text()) == settings:
        print(f"[generate] {spec.name}: reusing {out} ({len(prompts)} prompts × {num_images} images)")
        return out
    rank, world, _ = env_rank_world()
    print(f"[generate] {spec.describe()}: {len(prompts)} prompts × {num_images} images → {out}")
    generator, info = build_generator(spec, resolution, steps, guidance_scale, sampler, batch_size, device, dtype,
                                      base_models, generate_args, call_kwargs)
    from msdm.generators import write_challenge_folder as write

    write(generator, prompts, out, num_images, seed, rank, world, batch_size, info=info)
    if world > 1:
        wait_complete(out, prompts, num_images)
    if rank == 0:
        from msdm.io import write_json

        write_json(record, settings)
    return out


def _generate_options(generate_args: list[str] | None) -> dict:
    """``msdm generate``'s sampling options given as ``--generate-arg`` strings (they win over msdm utility's own)."""
    import argparse

    parser = argparse.ArgumentParser(prog="msdm utility --generate-arg", add_help=False)
    for flag, kind in (("--eta", float), ("--model-name", str), ("--steps", int), ("--guidance-scale", float),
                       ("--sampler", str), ("--batch-size", int), ("--device", str), ("--dtype", str)):
        parser.add_argument(flag, type=kind, default=None)
    args, unknown = parser.parse_known_args(list(generate_args or []))
    if unknown:
        raise ValueError(f"--generate-arg {unknown}: msdm utility sets the prompts, output, seed and shares itself; "
                         "pass sampling options only (--eta, --steps, --sampler, --guidance-scale, ...)")
    return {k: v for k, v in vars(args).items() if v is not None}


def build_generator(spec: GeneratorSpec, resolution: int = 64, steps: int | None = None,
                    guidance_scale: float | None = None, sampler: str | None = None, batch_size: int = 16,
                    device: str | None = None, dtype: str = "fp32", base_models: dict | None = None,
                    generate_args: list[str] | None = None, call_kwargs: dict | None = None):
    """``(generator, provenance info)`` of a spec (not ``images``: those are folders already)."""
    from msdm.generators import RenderGenerator, default_device, load_lora_generator

    if spec.kind == "render":
        gen = RenderGenerator(spec.mode, resolution)
        return gen, gen.info()
    if spec.kind == "msdm":
        from msdm.pipeline import load_generator

        o = {"sampler": sampler, "steps": steps, "guidance_scale": guidance_scale, "eta": 1.0,
             "batch_size": batch_size, "device": device, "dtype": dtype, "model_name": spec.name,
             **_generate_options(generate_args)}
        gen = load_generator(spec.paths[0], **o)
        return gen, {**gen.info(), "dtype": o["dtype"], "resolution": int(gen.pipe.config.resolution),
                     "seed_rule": SEED_RULE}
    from msdm.dtypes import parse_dtype

    call = {"height": resolution, "width": resolution, **(call_kwargs or {})}
    if steps is not None:
        call["num_inference_steps"] = steps
    if guidance_scale is not None:
        call["guidance_scale"] = guidance_scale
    gen = load_lora_generator(spec.paths, spec.name, device or default_device(env_rank_world()[2]),
                              parse_dtype(dtype), base_models, call, batch_size)
    info = {**gen.info(), "steps": steps, "guidance_scale": guidance_scale, "resolution": resolution, "dtype": dtype,
            "call_kwargs": call_kwargs, "guidance_convention": "diffusers: uncond + s*(cond - uncond)",
            "seed_rule": SEED_RULE}
    return gen, info
