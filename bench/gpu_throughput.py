"""Training throughput and model-FLOPs utilisation (MFU) of the paper-preset MSDM U-Net on one GPU.

    python bench/gpu_throughput.py                 # on a GPU: ~5 min on an H100, compile included
    python bench/gpu_throughput.py --smoke         # anywhere: the tiny preset, 2 steps per mode (a code check)

Network: the ``paper`` preset U-Net (326.5 M parameters, CLIP ViT-L/14-sized 768-d text states, 64 tokens) on
256² images = 32×32×8 latents, batch 64, bf16 autocast with fp32 master weights. Modes, each timed over
``--steps`` steps after warm-up (CUDA-synchronised):

* ``diffusers loop`` — the baseline: what diffusers' ``train_text_to_image.py`` does on this network. Frozen VAE
  (paper preset) and a CLIP-ViT-L/14-sized text encoder in bf16 encode every batch, AdamW (foreach), NCHW;
* ``+cache`` — the same loop reading cached posteriors (mean, std) and text states from pinned CPU memory, what
  ``MSDMUNetModule(cache_dir=...)`` does;
* ``+cache+NHWC+fused`` — plus ``channels_last`` and the fused AdamW kernel (``fused_optimizer``);
* ``+cache+NHWC+fused+compile`` — plus ``torch.compile`` of the U-Net (``torch_compile=true``);
* ``... +EMA`` — the best mode with the module's EMA update (one in-place foreach lerp) after each step.

MFU = (U-Net forward + backward FLOPs per image, counted by ``torch.utils.flop_counter`` on the meta device) ×
images/s ÷ the GPU's dense bf16 peak (H100 SXM / H200: 989 TFLOPS, H100 PCIe: 756, A100: 312; ``--peak-tflops``
overrides). The frozen encoders' FLOPs are not model FLOPs (they do not train) and are not counted.
Goals (issue 6): ≥ 1.3× the diffusers loop and ≥ 40 % MFU on an H100. Without CUDA and without ``--smoke`` the script
says so, runs the smoke version, and exits 0.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

PEAKS = {"H200": 989.4, "H100 PCIe": 756.0, "H100": 989.4, "A100": 312.0, "L40S": 362.0, "A10": 125.0}


def peak_tflops(name: str) -> float | None:
    for key, v in PEAKS.items():  # the more specific names come first
        if all(part in name for part in key.split()):
            return v
    return None


def count_flops_per_image(preset: str, text_dim: int, latent: tuple[int, int, int], tokens: int) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    from msdm.models.presets import build_unet

    with torch.device("meta"):
        unet = build_unet(preset, text_dim)
        x = torch.randn(1, *latent)
        with FlopCounterMode(display=False) as fc:
            out = unet(x, torch.tensor([500]), torch.randn(1, tokens, text_dim), torch.ones(1, tokens)).sample
            out.float().sum().backward()
    return float(fc.get_total_flops())


def clip_l_text_encoder(smoke: bool):
    from transformers import CLIPTextConfig, CLIPTextModel

    if smoke:
        cfg = CLIPTextConfig(hidden_size=32, intermediate_size=37, num_attention_heads=4, num_hidden_layers=2,
                             vocab_size=1000, max_position_embeddings=77)
    else:  # openai/clip-vit-large-patch14's text tower, random weights (timing only; nothing is downloaded)
        cfg = CLIPTextConfig(hidden_size=768, intermediate_size=3072, num_attention_heads=12, num_hidden_layers=12,
                             vocab_size=49408, max_position_embeddings=77, projection_dim=768)
    return CLIPTextModel(cfg)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=15)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: the default mode)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--peak-tflops", type=float, default=None)
    ap.add_argument("--smoke", action="store_true", help="tiny preset, 2 steps: checks the code path on any machine")
    ap.add_argument("--dry-run", action="store_true", help="parse the arguments, print the plan, run nothing")
    args = ap.parse_args()
    if args.dry_run:
        print(f"plan: paper-preset U-Net, batch {args.batch_size}, {args.steps} steps after {args.warmup} warm-up, "
              f"compile {'off' if args.no_compile else args.compile_mode or 'default'}")
        return 0

    cuda = torch.cuda.is_available()
    if not cuda and not args.smoke:
        print("gpu_throughput: this benchmark needs a CUDA GPU (none here). Running the CPU smoke version "
              "(--smoke: tiny preset, 2 steps per mode; its numbers mean nothing).")
        args.smoke = True
    if args.smoke:
        args.steps, args.warmup = 2, 1
        args.batch_size = min(args.batch_size, 4)
    dev = torch.device("cuda" if cuda else "cpu")
    if cuda:
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True

    from msdm.diffusion import diffusion_loss, training_scheduler
    from msdm.models.presets import build_unet, build_vae, get_preset
    from msdm.training.ema import EMA

    preset = "tiny" if args.smoke else "paper"
    p = get_preset(preset)
    res = p.resolution
    te = clip_l_text_encoder(args.smoke).to(dev, torch.bfloat16).eval().requires_grad_(False)
    text_dim, tokens = te.config.hidden_size, 64 if not args.smoke else 16
    vae = build_vae(p).to(dev, torch.bfloat16).eval().requires_grad_(False)
    f = 2 ** (len(vae.config.block_out_channels) - 1)
    latent = (vae.config.latent_channels, res // f, res // f)
    b = args.batch_size
    flops_img = count_flops_per_image(preset, text_dim, latent, tokens)
    sched = training_scheduler()
    gen = torch.Generator(device="cpu").manual_seed(0)
    # "dataset": pixels and token ids as a loader would deliver them; the cache's posteriors and text states
    pixels = torch.rand(b, 3, res, res, generator=gen).mul(2).sub(1).to(dev)
    ids = torch.randint(0, te.config.vocab_size, (b, tokens), generator=gen).to(dev)
    mask = torch.ones(b, tokens, device=dev)
    pin = cuda
    c_mean = torch.randn(b, *latent, generator=gen).pin_memory() if pin else torch.randn(b, *latent, generator=gen)
    c_std = (torch.rand(b, *latent, generator=gen) * 0.1)
    c_std = c_std.pin_memory() if pin else c_std
    c_text = torch.randn(b, tokens, text_dim, generator=gen)
    c_text = c_text.pin_memory() if pin else c_text
    amp = torch.autocast(dev.type, dtype=torch.bfloat16)

    def make(channels_last=False, fused=False, compiled=False, ema=False):
        torch.manual_seed(0)
        unet = build_unet(p, text_dim).to(dev)
        if channels_last:
            unet.to(memory_format=torch.channels_last)
        if compiled:
            # CPU smoke: trace with aot_eager (inductor's C++ code generation takes minutes on a small CPU)
            kw = {"backend": "aot_eager"} if not cuda else ({"mode": args.compile_mode} if args.compile_mode else {})
            unet.compile(**kw)
        opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, **({"fused": True} if fused else {}))
        e = EMA(unet.parameters(), decay=0.999) if ema else None  # what MSDMUNetModule(ema_decay=...) runs
        return unet, opt, e

    def train_step(unet, opt, ema, fmt, latents, states):
        with amp:
            loss = diffusion_loss(unet, latents, states, mask, sched, "l1", memory_format=fmt)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if ema is not None:
            ema.update()

    def step_baseline(unet, opt, ema, fmt):  # diffusers-style: the frozen VAE and text encoder on every batch
        with torch.no_grad():
            latents = vae.encode(pixels.to(torch.bfloat16)).latent_dist.sample().float()
            states = te(input_ids=ids, attention_mask=mask.long()).last_hidden_state
        train_step(unet, opt, ema, fmt, latents, states)

    def step_cached(unet, opt, ema, fmt):  # cached posterior (mean, std) and text states
        mean, std = c_mean.to(dev, non_blocking=True), c_std.to(dev, non_blocking=True)
        states = c_text.to(dev, non_blocking=True)
        train_step(unet, opt, ema, fmt, mean + std * torch.randn_like(mean), states)

    modes = [("diffusers loop", step_baseline, {}), ("+cache", step_cached, {}),
             ("+cache+NHWC+fused", step_cached, {"channels_last": True, "fused": True})]
    if not args.no_compile:
        modes.append(("+cache+NHWC+fused+compile", step_cached, {"channels_last": True, "fused": True,
                                                                  "compiled": True}))
    best = dict(modes[-1][2])
    modes.append((modes[-1][0] + "+EMA", step_cached, {**best, "ema": True}))

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    name = torch.cuda.get_device_name() if cuda else "CPU"
    peak = args.peak_tflops or (peak_tflops(name) if cuda else None)
    print(f"gpu_throughput: {name}, torch {torch.__version__}, preset {preset} U-Net "
          f"({sum(q.numel() for q in build_unet(p, text_dim).parameters()) / 1e6:.1f} M params), {res}² → latents "
          f"{latent}, batch {b}, bf16 autocast, {args.steps} steps after {args.warmup} warm-up"
          + (" [SMOKE: numbers are meaningless]" if args.smoke else ""))
    print(f"U-Net forward+backward: {flops_img / 1e9:.1f} GFLOP per image; peak {peak or 'unknown'} TFLOPS")
    print(f"{'mode':<34}{'img/s':>9}{'ms/step':>9}{'MFU':>7}{'vs loop':>9}{'peak GB':>9}{'warm-up s':>10}")
    results = {}
    for label, fn, kw in modes:
        unet, opt, ema = make(**kw)
        fmt = torch.channels_last if kw.get("channels_last") else None
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            fn(unet, opt, ema, fmt)
        sync()
        warm = time.perf_counter() - t0
        t0 = time.perf_counter()
        for _ in range(args.steps):
            fn(unet, opt, ema, fmt)
        sync()
        dt = (time.perf_counter() - t0) / args.steps
        ips = b / dt
        mfu = flops_img * ips / (peak * 1e12) if peak else float("nan")
        results[label] = ips
        mem = torch.cuda.max_memory_allocated() / 2**30 if cuda else float("nan")
        print(f"{label:<34}{ips:>9.1f}{dt * 1e3:>9.1f}{mfu * 100:>6.1f}%{ips / results['diffusers loop']:>8.2f}×"
              f"{mem:>9.1f}{warm:>10.1f}", flush=True)
        del unet, opt, ema
        if cuda:
            torch.cuda.empty_cache()
    fastest = max((k for k in results if not k.endswith("EMA")), key=results.get)
    ema_key = [k for k in results if k.endswith("EMA")][0]
    print(f"best: {fastest} = {results[fastest] / results['diffusers loop']:.2f}× the diffusers loop (goal ≥ 1.3×); "
          f"EMA costs {100 * (1 - results[ema_key] / results[modes[-2][0]]):.1f} % of the step")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
