"""Recipe experiments behind the quickstart's prompt-adherence defaults (docs/benchmarks.md, Prompt adherence).

Two curves, each from one training run on the embedded synthetic scenes (64², 2 048 scenes, seed 0):

    # stage 1: does the VAE keep what the prompts name? detector verdicts on 128 held-out renders vs their
    # reconstructions, every --every steps (the box artefact is the last to survive)
    python bench/adherence_recipes.py vae --steps 800 --batch 16 --out runs/vae_b16
    python bench/adherence_recipes.py vae --steps 800 --batch 8 --out runs/vae_b8

    # stage 2: paired adherence of the small U-Net every --every steps (checkpoints kept), for a training-caption
    # recipe (--caption-facts 1 = the paper's one caption per image per step) and a list of guidance scales
    python bench/adherence_recipes.py unet --vae runs/vae_b16/vae --caption-facts 8 --max-length 128 \\
        --batch 8 --steps 3200 --every 400 --guidance 3,7.5,10 --out runs/k8b8

Each line printed is one JSON record (also appended to OUT/curve.jsonl). ``--threads`` (default 1) lets two curves
share a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _record(out: Path, row: dict) -> None:
    print(json.dumps(row), flush=True)
    with open(out / "curve.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")


def vae_curve(a) -> None:
    import lightning.pytorch as pl
    import torch

    from datamodules.synthetic import SyntheticGIDataModule
    from lightning_modules import MSDMVAEModule
    from msdm.metrics.adherence import SceneDetector
    from msdm.synthetic import SyntheticGIDataset

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    pl.seed_everything(0, verbose=False)
    val = SyntheticGIDataset(128, 64, 0, "val")
    x = torch.stack([val[i]["pixel_values"] for i in range(128)])
    detector = SceneDetector()
    ref = detector.detect((x + 1) / 2)
    t0 = time.time()

    class Probe(pl.Callback):
        def on_train_batch_end(self, trainer, m, *args):
            step = trainer.global_step
            if step % a.every:
                return
            m.vae.eval()
            with torch.no_grad():
                rec = ((m.vae(x, sample_posterior=False).sample + 1) / 2).clamp(0, 1)
            m.vae.train()
            got = detector.detect(rec)
            row = {"stage": "vae", "batch": a.batch, "step": step, "wall_s": round(time.time() - t0, 1),
                   "cpu_s": round(time.process_time(), 1)}
            for attr in ("box", "text", "instrument"):
                pos = [i for i, r in enumerate(ref) if r[attr]]
                row[f"{attr}_kept"] = f"{sum(bool(got[i][attr]) for i in pos)}/{len(pos)}"
            _record(out, row)

    dm = SyntheticGIDataModule(num_train=2048, num_val=64, resolution=64, seed=0, batch_size=a.batch, num_workers=0)
    vae = MSDMVAEModule(preset="small", lr=a.lr)
    pl.Trainer(max_steps=a.steps, logger=False, enable_checkpointing=False, limit_val_batches=0,
               num_sanity_val_steps=0, callbacks=[Probe()], enable_progress_bar=False,
               enable_model_summary=False).fit(vae, datamodule=dm)
    vae.export(str(out / "vae"))


def unet_curve(a) -> None:
    import lightning.pytorch as pl
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.loggers import TensorBoardLogger

    from datamodules.synthetic import SyntheticGIDataModule
    from lightning_modules import MSDMUNetModule
    from msdm.commands.quickstart import PROMPTS
    from msdm.generators import MSDMGenerator
    from msdm.metrics.adherence import paired_adherence
    from msdm.pipeline import MSDMPipeline

    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    guidances = [float(g) for g in a.guidance.split(",")]
    if not a.eval_only:
        pl.seed_everything(0, verbose=False)
        dm = SyntheticGIDataModule(num_train=2048, num_val=64, resolution=64, seed=0, batch_size=a.batch,
                                   num_workers=0, val_prompts=PROMPTS, caption_facts=a.caption_facts)
        unet = MSDMUNetModule(
            preset="small", vae=a.vae, text_encoder="builtin:all-MiniLM-L6-v2", latent_scaling="auto", lr=a.lr,
            lr_warmup_steps=100, loss_type="mse", ema_decay=0.995, sampler="dpm++sde", num_inference_steps=20,
            cfg_dropout=a.cfg_dropout, sample_prompts=PROMPTS, text_chunking=a.text_chunking,
            max_length=a.max_length, image_size=64)
        pl.Trainer(accelerator="cpu", devices=1, max_steps=a.steps, default_root_dir=str(out), limit_val_batches=0,
                   logger=TensorBoardLogger(str(out), name="unet", version=""), enable_model_summary=False,
                   enable_progress_bar=False,
                   callbacks=[ModelCheckpoint(dirpath=str(out / "ckpt"), every_n_train_steps=a.every, save_top_k=-1,
                                              filename="{step}")]).fit(unet, datamodule=dm)
    for ckpt in sorted((out / "ckpt").glob("step=*.ckpt"), key=lambda p: int(p.stem.split("=")[1])):
        step = int(ckpt.stem.split("=")[1])
        folder = out / "ckpt" / f"{ckpt.stem}_pipe"
        if not folder.exists():
            MSDMUNetModule.load_from_checkpoint(str(ckpt), map_location="cpu").export(str(folder))
        pipe = MSDMPipeline.from_pretrained(str(folder)).set_sampler("dpm++sde")
        pipe.set_progress_bar_config(disable=True)
        for g in guidances:
            r = paired_adherence(MSDMGenerator(pipe, steps=20, guidance_scale=g, batch_size=48),
                                 num_images=a.num_images)
            _record(out, {"stage": "unet", "caption_facts": a.caption_facts, "batch": a.batch, "step": step,
                          "guidance": g, **{k: f"{r[k]['pos']:.2f}/{r[k]['neg']:.2f}"
                                            for k in ("box", "text", "instrument", "polyp")},
                          "mean_gap": round(r["mean_gap"], 3)})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="stage", required=True)
    v = sub.add_parser("vae", help="box/text/instrument retention through the VAE over training")
    v.add_argument("--steps", type=int, default=800)
    v.add_argument("--every", type=int, default=100)
    v.add_argument("--batch", type=int, default=16)
    v.add_argument("--lr", type=float, default=1e-3)
    u = sub.add_parser("unet", help="paired adherence over U-Net training")
    u.add_argument("--vae", required=True, help="a trained VAE (exported folder or stage-1 checkpoint)")
    u.add_argument("--caption-facts", type=int, default=1)
    u.add_argument("--max-length", type=int, default=64)
    u.add_argument("--text-chunking", default="sentence", choices=["none", "sentence"])
    u.add_argument("--batch", type=int, default=16)
    u.add_argument("--lr", type=float, default=1e-3)
    u.add_argument("--cfg-dropout", type=float, default=0.2)
    u.add_argument("--steps", type=int, default=1600)
    u.add_argument("--every", type=int, default=400)
    u.add_argument("--guidance", default="3,7.5,10", help="comma-separated CFG scales to score")
    u.add_argument("--num-images", type=int, default=24, help="images per prompt (paired mode)")
    u.add_argument("--eval-only", action="store_true", help="score the checkpoints already in OUT/ckpt")
    for p in (v, u):
        p.add_argument("--out", required=True)
        p.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    import torch

    torch.set_num_threads(a.threads)
    (vae_curve if a.stage == "vae" else unet_curve)(a)


if __name__ == "__main__":
    main()
