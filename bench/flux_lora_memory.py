"""Peak GPU memory and step time of FluxLoRAModule training at 256², rank 64, with and without gradient
checkpointing and cached text embeddings.

    python bench/flux_lora_memory.py                      # GPU: random-weight FLUX.1-dev of the true size
    python bench/flux_lora_memory.py --model /path/FLUX.1-dev   # GPU: real weights from a local folder
    python bench/flux_lora_memory.py                      # no GPU: a tiny random FLUX on the CPU (says so)

On a GPU without ``--model`` the components are the published FLUX.1-dev architectures (msdm.lora.published) with
random bf16 weights built directly on the device: memory and time do not depend on the weight values, and nothing
is downloaded. Tokenizers are tiny offline ones; prompts are padded to ``--max-sequence-length`` (512, FluxPipeline's
default) so the T5 sequence has the real length.

Configurations (one optimizer each, AdamW state included in the peak):
  cache=off: T5-XXL + CLIP-L stay on the GPU and encode every batch;
  cache=on : embeddings come from the per-sample cache (filled before the first step), encoders on the CPU.
Goal (issue 5): <= 30 GB peak on one H100 at rank 64 — reached only with the encoders off the GPU.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

from lightning_modules.flux_lora import FluxLoRAModule  # noqa: E402


class RandomFluxDevLoRAModule(FluxLoRAModule):
    """FluxLoRAModule whose frozen base is FLUX.1-dev's architecture with random bf16 weights, built on the GPU."""

    def load_base(self) -> dict:
        from diffusers import AutoencoderKL, FlowMatchEulerDiscreteScheduler, FluxTransformer2DModel
        from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer, T5Config, T5EncoderModel

        from msdm.lora.published import (
            FLUX1_DEV_CLIP_TEXT,
            FLUX1_DEV_SCHEDULER,
            FLUX1_DEV_T5,
            FLUX1_DEV_TRANSFORMER,
            FLUX1_DEV_VAE,
        )
        from msdm.lora.testing import build_word_tokenizer, write_tiny_clip_tokenizer

        dev = torch.device("cuda")
        old = torch.get_default_dtype()
        torch.set_default_dtype(torch.bfloat16)
        try:
            with torch.device(dev):
                transformer = FluxTransformer2DModel(**FLUX1_DEV_TRANSFORMER)
                vae = AutoencoderKL(**FLUX1_DEV_VAE)
                clip = CLIPTextModel(CLIPTextConfig(**FLUX1_DEV_CLIP_TEXT))
                t5 = T5EncoderModel(T5Config(**FLUX1_DEV_T5))
        finally:
            torch.set_default_dtype(old)
        for m in (transformer, vae, clip, t5):
            m.requires_grad_(False).eval()
        clip.to("cpu")  # the module moves encoders where its cache policy wants them
        t5.to("cpu")
        torch.cuda.empty_cache()
        tokdir = Path(tempfile.mkdtemp()) / "clip_tok"
        write_tiny_clip_tokenizer(tokdir)
        return {"transformer": transformer, "vae": vae, "text_encoder": clip,
                "tokenizer": CLIPTokenizer.from_pretrained(tokdir),
                "text_encoder_2": t5, "tokenizer_2": build_word_tokenizer(kind="t5", model_max_length=512),
                "scheduler": FlowMatchEulerDiscreteScheduler(**FLUX1_DEV_SCHEDULER)}


def gb(n: int) -> float:
    return n / 2**30


def run_config(m: FluxLoRAModule, batch: dict, gc: bool, cached: bool, steps: int, warmup: int, cuda: bool) -> dict:
    hp = m.hparams
    if gc:
        m.transformer.enable_gradient_checkpointing()
    else:
        m.transformer.disable_gradient_checkpointing()
    hp.cache_text_embeddings = cached
    hp.offload_text_encoders = cached
    if cached:
        m._text_cache = None
        m.precompute([batch])  # fills the cache; encoders go back to the CPU
        for enc in m._text_encoders():
            enc.to("cpu")
    else:
        for enc in m._text_encoders():
            enc.to(m.device)
    for p in m.lora_parameters():
        p.grad = None
    opt = m.configure_optimizers()
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if cuda else contextlib.nullcontext()
    if cuda:
        torch.cuda.empty_cache()
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(warmup + steps):
        t0 = time.perf_counter()
        with amp:
            loss = m.loss(batch, m.step_generator("bench", i))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    out = {"gc": gc, "cached": cached, "step_s": sum(times) / len(times), "loss": float(loss.detach())}
    if cuda:
        out["peak_gb"] = gb(torch.cuda.max_memory_allocated())
        out["reserved_gb"] = gb(torch.cuda.max_memory_reserved())
    del opt
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default=None, help="local FLUX folder with real weights (GPU); default: random FLUX.1-dev")
    ap.add_argument("--resolution", type=int, default=None, help="default 256 on GPU, 32 on CPU")
    ap.add_argument("--rank", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=1)
    ap.add_argument("--max-sequence-length", type=int, default=None, help="default 512 on GPU, 16 on CPU")
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--configs", default="all", help="all, or a comma list of gc0c0, gc1c0, gc0c1, gc1c1")
    ap.add_argument("--dry-run", action="store_true", help="parse the arguments, print the plan, run nothing")
    args = ap.parse_args(argv)
    wanted = ["gc0c0", "gc1c0", "gc0c1", "gc1c1"] if args.configs == "all" else args.configs.split(",")
    if set(wanted) - {"gc0c0", "gc1c0", "gc0c1", "gc1c1"}:
        ap.error(f"--configs: unknown {sorted(set(wanted) - {'gc0c0', 'gc1c0', 'gc0c1', 'gc1c1'})}")
    if args.dry_run:
        print(f"plan: FLUX LoRA rank {args.rank}, batch {args.batch_size}, resolution {args.resolution or 'default'}, "
              f"configs {','.join(wanted)}, {args.steps} steps after {args.warmup} warm-up")
        return 0

    cuda = torch.cuda.is_available()
    res = args.resolution or (256 if cuda else 32)
    seq = args.max_sequence_length or (512 if cuda else 16)
    common = {"rank": args.rank, "max_sequence_length": seq, "text_cache_dir": "memory", "export_lora": False}
    if cuda:
        name = torch.cuda.get_device_name()
        if args.model:
            m = FluxLoRAModule(model=args.model, frozen_dtype="bfloat16", **common)
            what = f"FLUX from {args.model} (real weights)"
        else:
            m = RandomFluxDevLoRAModule(model="random:FLUX.1-dev", frozen_dtype="bfloat16", **common)
            what = "FLUX.1-dev architecture, random bf16 weights (published configs)"
        m.to("cuda")
        for enc in m._text_encoders():
            enc.to("cpu")
        print(f"device: {name}; model: {what}")
    else:
        from msdm.lora.testing import write_tiny_flux

        tiny = write_tiny_flux(Path(tempfile.mkdtemp()) / "flux")
        m = FluxLoRAModule(model=tiny, frozen_dtype="float32", **common)
        print("device: CPU — no GPU here, so this runs a TINY random FLUX (about 0.1 M transformer parameters):")
        print("the figures below only show the bench works; they say nothing about FLUX.1-dev memory or speed.")
    n_lora = sum(p.numel() for p in m.lora_parameters())
    print(f"resolution {res}², batch {args.batch_size}, rank {args.rank} ({n_lora / 1e6:.2f} M LoRA params), "
          f"T5 tokens {seq}, steps {args.steps} (+{args.warmup} warm-up)")

    g = torch.Generator().manual_seed(0)
    batch = {"pixel_values": torch.rand(args.batch_size, 3, res, res, generator=g) * 2 - 1,
             "caption": ["generate an image containing a polyp"] * args.batch_size,
             "id": [f"bench{i}" for i in range(args.batch_size)]}
    rows = []
    for key in wanted:
        gc, cached = key[2] == "1", key[4] == "1"
        try:
            r = run_config(m, batch, gc, cached, args.steps, args.warmup, cuda)
        except torch.OutOfMemoryError:
            r = {"gc": gc, "cached": cached, "oom": True}
            torch.cuda.empty_cache()
        rows.append(r)
        mem = (f"peak {r['peak_gb']:6.2f} GB (reserved {r['reserved_gb']:6.2f})" if "peak_gb" in r
               else ("OOM" if r.get("oom") else "peak n/a on CPU"))
        step = f"{r['step_s'] * 1000:8.1f} ms/step" if "step_s" in r else ""
        print(f"  grad ckpt {'on ' if gc else 'off'} | text cache {'on ' if cached else 'off'} | {mem} | {step}",
              flush=True)
    by = {(r["gc"], r["cached"]): r for r in rows}
    base, best = by.get((False, False)), by.get((True, True))
    if base and best and "step_s" in base and "step_s" in best:
        print(f"ratio (ckpt+cache vs neither): time {best['step_s'] / base['step_s']:.2f}x", end="")
        if cuda and "peak_gb" in base and "peak_gb" in best:
            print(f", peak memory {best['peak_gb'] / base['peak_gb']:.2f}x; goal <= 30 GB: "
                  f"{'met' if best['peak_gb'] <= 30 else 'NOT met'} ({best['peak_gb']:.1f} GB)")
        else:
            print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
