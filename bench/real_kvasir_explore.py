"""Single-seed explorations behind msdm's recipe on real frames (docs/benchmarks.md, Real frames, third round):
U-Net steps and guidance on a fixed VAE (``steps``), then the decoder phase on that run's U-Net (``decoder``).

``steps``: trains the U-Net of the msdm recipe on a fixed joint-phase VAE checkpoint for ``--steps`` steps, keeps its
EMA weights at ``--snapshots``, and scores (like ``bench/real_kvasir.py``: FID / KID of one image per held-out frame,
REAL_PAIRS gaps) each snapshot with CFG 1.5, then the last one with autoguidance (each snapshot at most half-way as
the weaker model) and with CFG whose unconditional branch is the half-way snapshot. Weights go to ``OUT``.

``decoder``: loads the last U-Net of a ``steps`` run and, for each ``--noise`` value, fine-tunes the VAE's decoder
alone (encoder frozen, :mod:`msdm.training.decoder_phase`) for ``--decoder-steps`` at ``--lr`` on latents plus noise
up to that share of their std, and scores the reconstruction FID of the held-out frames (clean and with 10 % latent
noise) and the generated FID of the same U-Net (CFG 1.5, same seeds). ``null`` = the VAE as it is.

One seed: an exploration, not a measurement; ``bench/real_kvasir.py`` measures the chosen recipe over 3 seeds.

    python bench/real_kvasir_explore.py steps --vae runs/real_kvasir/work/msdm-s0/vae.ckpt --out runs/explore \\
        --steps 4000 --snapshots 1000 2000 3000
    python bench/real_kvasir_explore.py decoder --vae runs/real_kvasir/work/msdm-s0/vae.ckpt --out runs/explore \\
        --step 4000 --noise null 0 0.2 0.4
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import real_kvasir as rk  # noqa: E402  (this folder's bench: same data, split and scoring)

#: the U-Net recipe these runs explored from: msdm's before autoguidance became its default
BEFORE = {"autoguidance": None, "guidance_scale": 1.5}


def _module(data, vae: str):
    from lightning_modules import MSDMUNetModule
    from msdm.training.recipes import get_recipe

    recipe = get_recipe("msdm")
    recipe["unet"].update(BEFORE)
    unet = MSDMUNetModule(**recipe["unet"], vae=vae, text_encoder="builtin:all-MiniLM-L6-v2",
                          image_size=data.resolution, cfg_dropout=0.2, fused_optimizer=True)
    return recipe, unet


class _WeakUnconditional(torch.nn.Module):
    """The weaker model on the empty prompt: CFG whose unconditional branch is an early snapshot."""

    def __init__(self, weak, states, mask):
        super().__init__()
        self.weak, self.states, self.mask = weak, states, mask

    def forward(self, x, t, states, mask):
        n = x.shape[0]
        return self.weak(x, t, self.states.expand(n, -1, -1), self.mask.expand(n, -1))


def _score(data, unet, detector, weights, setting, log):
    unet.unet.load_state_dict(weights)
    ema, unet.ema = unet.ema, None  # sample these weights as they are
    try:
        r = rk.score_sampling(data, unet, detector, setting, 16)
    finally:
        unet.ema = ema
    r.pop("images")
    gaps = {k: v["gap"] for k, v in r["paired"].items() if k != "mean_gap"}
    print(f"[{setting['name']}] FID {r['fid']:.1f} KID {r['kid']:.4f} clipped255 {r['clipped_255']:.4f} "
          + " ".join(f"{k} {g:+.2f}" for k, g in gaps.items()), flush=True)
    r["setting"] = {k: v for k, v in setting.items() if k != "guide_unet"}
    log.append(r)


def steps(args, data) -> list:
    import lightning.pytorch as pl

    from msdm.metrics.adherence.real_detector import RealFrameDetector

    detector = RealFrameDetector()
    pl.seed_everything(args.seed, verbose=False)
    recipe, unet = _module(data, args.vae)
    snaps, out = {}, Path(args.out)

    class Snap(pl.Callback):
        def on_train_batch_end(self, trainer, module, *a):
            s = trainer.global_step
            if s in args.snapshots and s not in snaps:
                with module.ema_weights():
                    snaps[s] = copy.deepcopy(module.unet.state_dict())

    t = time.perf_counter()
    rk._trainer(out / "trainer", args.steps, [Snap()]).fit(unet, datamodule=data.datamodule(recipe, args.seed, 8))
    print(f"{args.steps} steps in {time.perf_counter() - t:.0f} s", flush=True)
    with unet.ema_weights():
        snaps[args.steps] = copy.deepcopy(unet.unet.state_dict())
    for s, w in snaps.items():
        torch.save(w, out / f"unet_ema_{s}.pt")
    torch.save(unet.latent_scale.clone(), out / "latent_scale.pt")
    log = []
    for s in sorted(snaps):
        _score(data, unet, detector, snaps[s], {"name": f"step {s}, CFG 1.5"}, log)
    last, half = snaps[args.steps], args.steps // 2
    for s in [s for s in sorted(snaps) if s <= half]:
        weak = copy.deepcopy(unet.unet)
        weak.load_state_dict(snaps[s])
        _score(data, unet, detector, last, {"name": f"step {args.steps}, autoguidance w2, weaker = step {s}",
                                            "guidance_scale": 2.0, "guide_unet": weak.eval()}, log)
    if half in snaps:
        weak = copy.deepcopy(unet.unet)
        weak.load_state_dict(snaps[half])
        states, mask = unet.encode_prompts([""])
        for g in (1.5, 2.0, 3.0):
            _score(data, unet, detector, last, {"name": f"step {args.steps}, CFG {g:g} with step {half} unconditional",
                                                "guidance_scale": g,
                                                "guide_unet": _WeakUnconditional(weak.eval(), states, mask)}, log)
    return log


def decoder(args, data) -> list:
    from msdm.losses import VAELoss
    from msdm.metrics.realism.frechet import frechet_distance
    from msdm.models.vae import MSDMVAEOutput
    from msdm.training.decoder_phase import noisy_latents

    out = Path(args.out)
    _, unet = _module(data, args.vae)
    unet.latent_scale.copy_(torch.load(out / "latent_scale.pt"))
    unet.unet.load_state_dict(torch.load(out / f"unet_ema_{args.step}.pt"))
    unet.ema = None
    vae = unet.vae
    base = copy.deepcopy(vae.state_dict())
    loss_fn = VAELoss("mse", 1.0, 0.0, None, 1e-6)  # the recipe's VAE loss

    @torch.no_grad()
    def recon_fid(noise):
        vae.eval()
        g = torch.Generator().manual_seed(1)
        x, outs = data.held_images * 2 - 1, []
        for i in range(0, len(x), 50):
            z = vae.encode(x[i:i + 50]).latent_dist.mode()
            outs.append(vae.decode(z + noise * z.std() * torch.randn(z.shape, generator=g)).sample)
        return frechet_distance(data.features((torch.cat(outs).clamp(-1, 1) + 1) / 2), data.held_feats)

    log = []
    for noise in args.noise:
        vae.load_state_dict(base)
        t = time.perf_counter()
        if noise is not None:
            for n, p in vae.named_parameters():
                p.requires_grad_(n.startswith(("dec_", "out")))
            opt = torch.optim.Adam([p for p in vae.parameters() if p.requires_grad], lr=args.lr)
            g = torch.Generator().manual_seed(0)
            x_all = data.train_images * 2 - 1
            vae.train()
            for _ in range(args.decoder_steps):
                x = x_all[torch.randint(len(x_all), (8,), generator=g)]
                with torch.no_grad():
                    post = vae.encode(x).latent_dist
                    z = noisy_latents(post.sample(g), noise, g)
                sample, heads = vae.decode_with_heads(z)
                loss = loss_fn(MSDMVAEOutput(sample=sample, deep_supervision=heads, posterior=post), x)["loss"]
                opt.zero_grad()
                loss.backward()
                opt.step()
            vae.requires_grad_(False)
        vae.eval()
        r = rk.score_sampling(data, unet, None, {"name": f"decoder noise {noise}"}, 0)
        row = {"noise": noise, "decoder_steps": args.decoder_steps if noise is not None else 0, "lr": args.lr,
               "train_s": time.perf_counter() - t - r["sample_s"], "recon_fid": recon_fid(0.0),
               "recon_fid_noise10": recon_fid(0.1), "gen_fid": r["fid"], "gen_kid": r["kid"],
               "clipped_255": r["clipped_255"]}
        print(json.dumps(row), flush=True)
        log.append(row)
    return log


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("what", choices=["steps", "decoder"])
    ap.add_argument("--vae", required=True, help="a joint-phase VAE checkpoint of the msdm recipe")
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=4000)
    ap.add_argument("--snapshots", type=int, nargs="*", default=[1000, 2000, 3000])
    ap.add_argument("--step", type=int, default=4000, help="decoder: the U-Net snapshot of the steps run")
    ap.add_argument("--noise", type=json.loads, nargs="+", default=[None, 0.0, 0.2, 0.4])
    ap.add_argument("--decoder-steps", type=int, default=600)
    ap.add_argument("--lr", type=float, default=1e-4)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    data = rk.Data([str(rk.SHARED / "kvasir-seg"), str(rk.SHARED / "kvasir-seg-extra")],
                   str(rk.ROOT / "msdm" / "assets" / "kvasir_seg_overlay_labels.csv"), 200, 64)
    log = steps(args, data) if args.what == "steps" else decoder(args, data)
    from msdm.io import write_json

    write_json(Path(args.out) / f"{args.what}.json", {"command": " ".join(sys.argv), "results": log})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
