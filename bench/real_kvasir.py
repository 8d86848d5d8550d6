"""Small MSDM on real colonoscopy frames: realism, prompt-following and saturation against held-out real frames,
mean ± std over seeds, msdm's recipe against the paper's at the same CPU budget, in one run.

Data: the image + mask folders (default: the 698 Kvasir-SEG frames of ``../shared/data/kvasir-seg`` and
``kvasir-seg-extra``) with hand-labelled box / text (``msdm/assets/kvasir_seg_overlay_labels.csv``). A fixed
held-out split (:func:`msdm.data.splits.heldout_split`: the ``--heldout`` frames with the smallest crc32 of
``"0:<folder>/<file>"``, the same split as ``msdm quickstart``'s on the packaged 64 px sample) is never trained on. Training captions join 1..K true facts of each frame
(:class:`~datamodules.FactCaptionDataModule`'s dataset).

Per (recipe, seed), trained with the library's own Lightning modules (:mod:`msdm.training.recipes` holds both
recipes), the run records:

* the VAE's reconstruction FID on the held-out frames (the first stage bounds everything) and whether the box and
  the polyp survive reconstruction (:class:`~msdm.metrics.adherence.real_detector.RealFrameDetector` on frames vs their
  reconstructions);
* for each guidance setting: FID and KID (Inception, unbiased KID of torchmetrics' polynomial MMD over subsets) of
  one image per held-out frame (its full true caption, seed = its index) against the held-out frames; the share of
  pixels clipped at 255 and at 0 vs the real frames'; the paired adherence gaps of ``REAL_PAIRS`` (same seeds under
  a prompt and its contrast);
* the real-vs-real floor at the same n: FID of ``--heldout`` training frames (3 disjoint draws) vs the held-out.

Results go to ``OUT/runs/<recipe>-s<seed>.json`` (a finished run is skipped when the script is run again) and the
summary (mean ± std over seeds) to ``OUT/summary.json`` and stdout. docs/benchmarks.md ("Real frames") has the
figures and the command.

    python bench/real_kvasir.py --out runs/real_kvasir                      # 3 seeds × {msdm, paper}, 64 px
    python bench/real_kvasir.py --out runs/real128 --resolution 128 --seeds 0 --recipes msdm   # the 128 px run
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SHARED = ROOT.parent / "shared" / "data"


def to_u8(x: torch.Tensor) -> torch.Tensor:
    """[0, 1] float → uint8."""
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def clipped(u8: torch.Tensor) -> tuple[float, float]:
    return float((u8 == 255).float().mean()), float((u8 == 0).float().mean())


def kid(real: torch.Tensor, fake: torch.Tensor, subsets: int = 50, subset_size: int = 100, seed: int = 0) -> float:
    """Unbiased KID (Bińkowski et al. 2018): mean polynomial-kernel MMD² over random subsets (torchmetrics' kernel)."""
    from torchmetrics.image.kid import poly_mmd

    g = torch.Generator().manual_seed(seed)
    m = min(subset_size, len(real), len(fake))
    vals = [poly_mmd(real[torch.randperm(len(real), generator=g)[:m]].double(),
                     fake[torch.randperm(len(fake), generator=g)[:m]].double()) for _ in range(subsets)]
    return float(torch.stack(vals).mean())


class Data:
    """Frames, split, real features and the held-out prompts (shared by every run)."""

    def __init__(self, folders: list[str], labels: str | None, n_heldout: int, resolution: int):
        from datamodules.fact_captions import FactCaptionDataModule
        from msdm.data.splits import heldout_split
        from msdm.facts.dataset import FactFramesDataset
        from msdm.metrics.realism.features import InceptionExtractor

        self.folders, self.labels, self.resolution = folders, labels, resolution
        frames = FactCaptionDataModule.frames_of(folders, labels)
        tr, te = heldout_split([f[0] for f in frames], n_heldout)
        self.train_frames, self.held_frames = [frames[i] for i in tr], [frames[i] for i in te]
        full = FactFramesDataset(self.held_frames, resolution=resolution, caption_facts=99, procedure="colonoscopy",
                                 fixed=True)
        self.held_prompts = [full.full_caption(i) for i in range(len(full))]  # every true fact of the frame
        self.held_images = torch.stack([full[i]["pixel_values"] for i in range(len(full))]).add(1).div(2)
        tr_ds = FactFramesDataset(self.train_frames, resolution=resolution, procedure="colonoscopy", fixed=True)
        self.train_images = torch.stack([tr_ds[i]["pixel_values"] for i in range(len(tr_ds))]).add(1).div(2)
        self.inception = InceptionExtractor()
        self.held_feats = self.features(self.held_images)
        self.train_feats = self.features(self.train_images)
        self.real_clipped = clipped(to_u8(self.held_images))

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.inception.extract(to_u8(images), batch_size=50)

    def floor(self, draws: int = 3) -> dict:
        """Real-vs-real FID / KID at the held-out n: disjoint draws of training frames vs the held-out frames."""
        from msdm.metrics.realism.frechet import frechet_distance

        n = len(self.held_feats)
        g = torch.Generator().manual_seed(0)
        perm = torch.randperm(len(self.train_feats), generator=g)
        fids, kids = [], []
        for d in range(min(draws, len(perm) // n)):
            f = self.train_feats[perm[d * n:(d + 1) * n]]
            fids.append(frechet_distance(f, self.held_feats))
            kids.append(kid(self.held_feats, f))
        return {"fid": fids, "kid": kids, "n": n}

    def datamodule(self, recipe: dict, seed: int, batch_size: int):
        from datamodules.fact_captions import FactCaptionDataModule
        from msdm.facts.dataset import FactFramesDataset

        dm = FactCaptionDataModule(data=self.folders, overlay_labels=self.labels, resolution=self.resolution,
                                   caption_facts=recipe["caption_facts"], seed=seed, batch_size=batch_size)
        dm.train_dataset = FactFramesDataset(self.train_frames, resolution=self.resolution, seed=seed,
                                             caption_facts=recipe["caption_facts"], procedure="colonoscopy", flips=True)
        dm.val_dataset = None  # no validation while training: the bench scores at the end
        return dm


def _trainer(root: Path, steps: int, callbacks=()):
    import lightning.pytorch as pl

    return pl.Trainer(accelerator="cpu", devices=1, max_steps=steps, default_root_dir=str(root), logger=False,
                      enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                      limit_val_batches=0, num_sanity_val_steps=0, callbacks=list(callbacks))


def train_vae(data: Data, recipe: dict, seed: int, steps: int, root: Path, resume: Path | None = None):
    """``steps`` joint steps, then the recipe's decoder phase (:func:`msdm.training.recipes.vae_fit_steps`);
    ``resume``: a finished joint run of the same settings, to which only the decoder phase is added."""
    import lightning.pytorch as pl

    from lightning_modules import MSDMVAEModule
    from msdm.training.recipes import vae_fit_steps

    pl.seed_everything(seed, verbose=False)
    vae = MSDMVAEModule(**recipe["vae"], test_fid=False)
    t = time.perf_counter()
    _trainer(root, vae_fit_steps(recipe, steps)).fit(vae, datamodule=data.datamodule(recipe, seed, recipe["vae_batch_size"]),
                                                     ckpt_path=str(resume) if resume else None)
    return vae, time.perf_counter() - t


@torch.no_grad()
def score_vae(data: Data, vae_module, detector) -> dict:
    from msdm.metrics.realism.frechet import frechet_distance

    vae = vae_module.vae.eval()
    x = data.held_images * 2 - 1
    rec = torch.cat([vae(x[i:i + 50], sample_posterior=False).sample for i in range(0, len(x), 50)])
    rec = ((rec.clamp(-1, 1) + 1) / 2)
    real_d, rec_d = detector.detect(data.held_images), detector.detect(rec)
    keep = {}
    for key in ("box", "polyp_large", "polyp"):
        on = [i for i, d in enumerate(real_d) if d[key]]
        keep[key] = {"n": len(on), "kept": (sum(bool(rec_d[i][key]) for i in on) / len(on)) if on else None}
    return {"recon_fid": frechet_distance(data.features(rec), data.held_feats), "survives": keep}


def train_unet(data: Data, recipe: dict, vae_ckpt: Path, seed: int, steps: int, root: Path):
    import lightning.pytorch as pl

    from lightning_modules import MSDMUNetModule

    pl.seed_everything(seed, verbose=False)
    unet = MSDMUNetModule(**recipe["unet"], vae=str(vae_ckpt), text_encoder="builtin:all-MiniLM-L6-v2",
                          image_size=data.resolution, cfg_dropout=0.2, fused_optimizer=True)
    t = time.perf_counter()
    _trainer(root, steps).fit(unet, datamodule=data.datamodule(recipe, seed, recipe["batch_size"]))
    return unet, time.perf_counter() - t


def score_sampling(data: Data, unet, detector, setting: dict, adherence_images: int) -> dict:
    from msdm.metrics.adherence.paired import pair_counts, paired_result
    from msdm.metrics.adherence.real_detector import REAL_PAIRS
    from msdm.metrics.realism.frechet import frechet_distance

    kw = {k: v for k, v in setting.items() if k != "name"}
    t = time.perf_counter()
    images = unet.generate_with_seeds(data.held_prompts, list(range(len(data.held_prompts))), batch_size=50, **kw)
    gen_s = time.perf_counter() - t
    feats = data.features(images)
    u8 = to_u8(images)
    out = {"setting": setting, "fid": frechet_distance(feats, data.held_feats), "kid": kid(data.held_feats, feats),
           "clipped_255": clipped(u8)[0], "clipped_0": clipped(u8)[1], "n": len(images), "sample_s": gen_s,
           "images": images[:16]}
    if adherence_images:
        # same seeds under a prompt and its contrast (msdm.metrics.adherence.paired's layout: pair by pair, n + n)
        n, seeds = adherence_images, list(range(10_000, 10_000 + adherence_images))
        prompts = [p for pos, neg in REAL_PAIRS.values() for p in [pos] * n + [neg] * n]
        pair_images = unet.generate_with_seeds(prompts, seeds * (2 * len(REAL_PAIRS)), batch_size=50, **kw)
        out["paired"] = paired_result(pair_counts(detector.detect(pair_images), REAL_PAIRS, n), n)
    return out


def settings_for(recipe: dict, recipe_name: str, first_seed: bool) -> list[dict]:
    """Guidance settings scored per run: the recipe's own and the alternatives on every seed; a CFG sweep on the
    first seed (docs/benchmarks.md)."""
    if recipe_name == "paper":
        s = [{"name": "paper: ddim-150 g4.5"}]
        return s + ([{"name": "paper: dpm++sde-20 g4.5", "sampler": "dpm++sde", "num_inference_steps": 20}]
                    if first_seed else [])
    cfg = {"autoguidance": False} if recipe["unet"].get("autoguidance") else {}
    s = [{"name": "msdm default"}]
    if cfg:  # the recipe guides with its early EMA (autoguidance): classifier-free guidance beside it, same run
        s.append({"name": "CFG g1.5", **cfg, "guidance_scale": 1.5})
    s.append({"name": "g1", **cfg, "guidance_scale": 1.0})
    if first_seed:  # the guidance sweep of issue 20's goal (FID within 10 % of the best over g in {1, 1.5, 2, 3, 5})
        s += [{"name": f"CFG g{g:g}", **cfg, "guidance_scale": g} for g in (2.0, 3.0, 5.0)]
    return s


def run_one(data: Data, name: str, seed: int, args, detector) -> dict:
    from torchvision.utils import save_image

    from msdm.training.recipes import get_recipe

    recipe = get_recipe(name)
    root = Path(args.out) / "work" / f"{name}-s{seed}"
    root.mkdir(parents=True, exist_ok=True)
    earlier = reusable_vae(args.vae_from, name, seed, recipe, args) if args.vae_from else None
    result = {"recipe": name, "seed": seed, "recipe_settings": recipe, "vae_steps": args.vae_steps,
              "unet_steps": args.unet_steps}
    vae_ckpt = root / "vae.ckpt"
    if earlier is not None and earlier[2] == "same":  # the same first stage (deterministic per seed)
        vae_ckpt, prev, _ = earlier
        result.update(vae_train_s=prev["vae_train_s"], vae=prev["vae"], vae_reused_from=str(vae_ckpt))
        print(f"  {name} s{seed}: VAE reused from {vae_ckpt} (trained in {prev['vae_train_s']:.0f} s), "
              f"reconstruction FID {result['vae']['recon_fid']:.1f}", flush=True)
    else:
        # an earlier joint phase of these settings: resumed, only the decoder phase trains here (the encoder, so the
        # latents, are that run's: the VAE stage is deterministic per seed)
        resume = earlier[0] if earlier is not None else None
        vae, vae_s = train_vae(data, recipe, seed, args.vae_steps, root / "vae", resume=resume)
        if resume is not None:
            result.update(vae_joint_reused_from=str(resume), vae_joint_train_s=earlier[1]["vae_train_s"],
                          vae_decoder_phase_s=vae_s, vae_joint=earlier[1]["vae"])
            vae_s += earlier[1]["vae_train_s"]
        vae.trainer.save_checkpoint(str(vae_ckpt))
        result.update(vae_train_s=vae_s, vae=score_vae(data, vae, detector))
        print(f"  {name} s{seed}: VAE {vae_s:.0f} s{' (joint phase reused)' if resume else ''}, reconstruction FID "
              f"{result['vae']['recon_fid']:.1f}", flush=True)
    unet, unet_s = train_unet(data, recipe, vae_ckpt, seed, args.unet_steps, root / "unet")
    result["unet_train_s"] = unet_s
    result["sampling"] = []
    grids = []
    for setting in settings_for(recipe, name, seed == args.seeds[0]):
        r = score_sampling(data, unet, detector, setting, args.adherence_images)
        grids.append(r.pop("images"))
        r["setting"] = setting
        gaps = r.get("paired", {})
        print(f"  {name} s{seed} [{setting['name']}]: FID {r['fid']:.1f}, KID {r['kid']:.4f}, clipped 255 "
              f"{r['clipped_255']:.4f}, mean gap {gaps.get('mean_gap', float('nan')):.2f}", flush=True)
        result["sampling"].append(r)
    save_image(torch.cat([data.held_images[:16]] + grids), root / "samples.png", nrow=16)
    return result


def reusable_vae(earlier_out: str, name: str, seed: int, recipe: dict, args):
    """``(vae.ckpt, result, how)`` of an earlier run in ``earlier_out`` whose first stage is this run's: same recipe
    name, seed, resolution, VAE batch size and joint steps, and the same VAE settings (``how = "same"``) or the same
    but for the decoder phase, which the earlier run lacks (``how = "joint"``: resume it and add the phase). The VAE
    stage is deterministic per seed, so U-Net and decoder changes are measured over seeds without retraining it.
    ``None`` (with the reason) otherwise."""
    root = Path(earlier_out)
    path = root / "runs" / f"{name}-s{seed}-r{args.resolution}.json"
    ckpt = root / "work" / f"{name}-s{seed}" / "vae.ckpt"
    if not (path.exists() and ckpt.exists()):
        print(f"  {name} s{seed}: no earlier VAE in {root} ({path.name} / vae.ckpt missing): training it", flush=True)
        return None
    prev = json.loads(path.read_text())
    old, new = prev["recipe_settings"], recipe
    phase = ("decoder_steps", "decoder_lr", "decoder_noise")
    joint_old = {k: v for k, v in old["vae"].items() if k not in phase}
    joint_new = {k: v for k, v in new["vae"].items() if k not in phase}
    if old["vae_batch_size"] != new["vae_batch_size"] or prev["vae_steps"] != args.vae_steps or joint_old != joint_new:
        print(f"  {name} s{seed}: the earlier VAE in {root} has other settings: training it", flush=True)
        return None
    if old["vae"] == new["vae"]:
        return ckpt, prev, "same"
    if any(k in old["vae"] for k in phase):
        print(f"  {name} s{seed}: the earlier VAE in {root} has another decoder phase: training it", flush=True)
        return None
    return ckpt, prev, "joint"


def summarize(results: list[dict], floor: dict, real_clipped) -> dict:
    def ms(values):
        v = np.asarray([x for x in values if x is not None], dtype=float)
        return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if len(v) > 1 else 0.0, "n_seeds": len(v)}

    out = {"floor_fid": ms(floor["fid"]), "floor_kid": ms(floor["kid"]), "n": floor["n"],
           "real_clipped_255": real_clipped[0], "real_clipped_0": real_clipped[1], "recipes": {}}
    for name in sorted({r["recipe"] for r in results}):
        runs = [r for r in results if r["recipe"] == name]
        rec = {"seeds": [r["seed"] for r in runs], "recon_fid": ms([r["vae"]["recon_fid"] for r in runs]),
               "train_s": ms([r["vae_train_s"] + r["unet_train_s"] for r in runs]), "settings": {}}
        for key in ("box", "polyp_large", "polyp"):
            rec[f"recon_keeps_{key}"] = ms([r["vae"]["survives"][key]["kept"] for r in runs])
        names = [s["setting"]["name"] for s in runs[0]["sampling"]]
        for sname in names:
            rows = [s for r in runs for s in r["sampling"] if s["setting"]["name"] == sname]
            entry = {"fid": ms([s["fid"] for s in rows]), "kid": ms([s["kid"] for s in rows]),
                     "clipped_255": ms([s["clipped_255"] for s in rows]), "n_seeds": len(rows)}
            if all("paired" in s for s in rows):
                attrs = [k for k in rows[0]["paired"] if k != "mean_gap"]
                entry["gaps"] = {a: ms([s["paired"][a]["gap"] for s in rows]) for a in attrs}
                entry["mean_gap"] = ms([s["paired"]["mean_gap"] for s in rows])
            rec["settings"][sname] = entry
        out["recipes"][name] = rec
    return out


def print_summary(s: dict) -> None:
    f = s["floor_fid"]
    print(f"\nreal-vs-real floor at n={s['n']}: FID {f['mean']:.1f} ± {f['std']:.1f}, KID "
          f"{s['floor_kid']['mean']:.4f}; real clipped: 255 {s['real_clipped_255']:.4f}, 0 {s['real_clipped_0']:.4f}")
    for name, rec in s["recipes"].items():
        print(f"\n{name} (seeds {rec['seeds']}): train {rec['train_s']['mean'] / 60:.1f} min, VAE reconstruction FID "
              f"{rec['recon_fid']['mean']:.1f} ± {rec['recon_fid']['std']:.1f}; reconstruction keeps box "
              f"{rec['recon_keeps_box']['mean']:.2f}, large polyp {rec['recon_keeps_polyp_large']['mean']:.2f}")
        for sname, e in rec["settings"].items():
            gaps = " ".join(f"{a} {g['mean']:+.2f}±{g['std']:.2f}" for a, g in e.get("gaps", {}).items())
            print(f"  {sname:<32} FID {e['fid']['mean']:6.1f} ± {e['fid']['std']:4.1f} ({e['fid']['mean'] / f['mean']:.2f}× "
                  f"floor, {e['n_seeds']} seeds)  KID {e['kid']['mean']:.4f}  clipped255 {e['clipped_255']['mean']:.4f}"
                  f"  gaps: {gaps}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", nargs="+", default=[str(SHARED / "kvasir-seg"), str(SHARED / "kvasir-seg-extra")])
    ap.add_argument("--labels", default=str(ROOT / "msdm" / "assets" / "kvasir_seg_overlay_labels.csv"))
    ap.add_argument("--heldout", type=int, default=200)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--recipes", nargs="+", default=["msdm", "paper"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--vae-steps", type=int, default=1200)
    ap.add_argument("--unet-steps", type=int, default=3800)
    ap.add_argument("--adherence-images", type=int, default=16, help="images per prompt of each REAL_PAIRS prompt")
    ap.add_argument("--threads", type=int, default=int(os.environ.get("MSDM_BENCH_THREADS", "2")))
    ap.add_argument("--out", default="runs/real_kvasir")
    ap.add_argument("--vae-from", default=None, metavar="EARLIER_OUT",
                    help="reuse the VAE of an earlier run's --out when its first-stage settings are these (U-Net "
                         "changes measured over seeds without retraining the deterministic first stage)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from msdm.metrics.adherence.real_detector import RealFrameDetector

    out = Path(args.out)
    (out / "runs").mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    data = Data(args.data, args.labels, args.heldout, args.resolution)
    floor = data.floor()
    print(f"{len(data.train_frames)} training frames, {len(data.held_frames)} held out; floor FID "
          f"{np.mean(floor['fid']):.1f} ({time.perf_counter() - t:.0f} s)", flush=True)
    detector = RealFrameDetector()
    results = []
    for seed in args.seeds:
        for name in args.recipes:
            path = out / "runs" / f"{name}-s{seed}-r{args.resolution}.json"
            if path.exists():
                results.append(json.loads(path.read_text()))
                continue
            r = run_one(data, name, seed, args, detector)
            from msdm.io import write_json

            write_json(path, r)
            results.append(r)
    summary = summarize(results, floor, data.real_clipped)
    summary["command"] = " ".join(["python", "bench/real_kvasir.py", *(argv or sys.argv[1:])])
    from msdm.io import write_json

    write_json(out / "summary.json", summary)
    print_summary(summary)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
