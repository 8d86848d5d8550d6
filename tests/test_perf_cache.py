"""Latent + text cache of MSDMUNetModule: hits/misses, invalidation, sample-id keying under shuffling, identical
training with and without it, frozen parts never loaded when training from a full cache, augmentation variants."""

import lightning.pytorch as pl
import pytest
import torch
from conftest import SampleList, make_loader, save_tiny_vae
from torch.utils.data import DataLoader

from lightning_modules import MSDMUNetModule
from msdm.data.epoch_sampler import EpochShuffleSampler


def _trainer(root, **kw):
    kw.setdefault("max_epochs", 1)
    return pl.Trainer(accelerator="cpu", devices=1, default_root_dir=root, enable_progress_bar=False,
                      enable_model_summary=False, logger=False, enable_checkpointing=False, num_sanity_val_steps=0,
                      **kw)


@pytest.fixture(scope="module")
def vae_ckpt(tmp_path_factory):
    return save_tiny_vae(tmp_path_factory.mktemp("vae") / "vae.ckpt", seed=1)


def _unet(vae_ckpt, te, **kw):
    kw = {"preset": "tiny", "vae": vae_ckpt, "text_encoder": te, "max_length": 16, "lr": 1e-3, **kw}
    return MSDMUNetModule(**kw)


def _cache_overrides(vae_ckpt, text_encoder, tmp_path, num_train: int) -> list[str]:
    """configs/quickstart_unet.yaml made tiny, with a cache folder under ``tmp_path``."""
    return [f"--model.init_args.vae={vae_ckpt}", f"--model.init_args.text_encoder={text_encoder}",
            "--model.init_args.preset=tiny", "--model.init_args.max_length=16", "--model.init_args.image_size=32",
            f"--model.init_args.cache_dir={tmp_path / 'cache'}", "--data.init_args.resolution=32",
            f"--data.init_args.num_train={num_train}", "--data.init_args.num_val=4", "--data.init_args.batch_size=4"]


class RecordLosses(pl.Callback):
    def __init__(self):
        self.losses, self.loaded = [], []

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.loaded.append(module.frozen_loaded())

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.losses.append(float(outputs["loss"]))


def test_cache_mode_leaves_the_frozen_parts_unloaded_until_needed(vae_ckpt, tiny_text_encoder):
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir="memory")
    assert not m.frozen_loaded() and "vae" not in m._modules
    assert m.unet.config.text_embed_dim == 32  # hidden size read from the config file alone
    assert m.vae.config.latent_channels == 4  # first access loads them
    assert m.frozen_loaded() and not m.vae.training and not any(p.requires_grad for p in m.text_encoder.parameters())
    m.release_frozen()
    assert not m.frozen_loaded()


def test_fill_hit_miss_and_markers(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path / "c"), sample_prompts=["Generate an image."])
    loaders = {"train": make_loader(kvasir_samples), "val": make_loader(kvasir_samples[:4], shuffle=False)}
    stats = m.fill_cache(loaders)
    # 8 train + 4 val posteriors; text: "", the sample prompt, then the 4 distinct captions
    assert stats["train"]["latents"] == 8 and stats["val"]["latents"] == 4
    assert stats["extra_text"] == 2 and stats["train"]["text"] == 4 and stats["val"]["text"] == 0
    assert stats["train"]["complete"] and len(m.cache.latents) == 12 and len(m.cache.text) == 6

    # a second module with the same settings finds the markers: no data is read, nothing is encoded
    m2 = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path / "c"), sample_prompts=["Generate an image."])
    stats2 = m2.fill_cache(loaders)
    assert stats2["train"] == {"batches": 0, "latents": 0, "text": 0, "skipped": True} and stats2["extra_text"] == 0
    assert not m2.frozen_loaded()  # everything hit: the frozen parts were never needed
    batch = next(iter(loaders["train"]))
    mean, std = m2.cached_posterior(batch, "train")
    assert mean.shape == (4, 4, 16, 16) and (std > 0).all()
    assert m2.cache.latents.hits == 4 and m2.cache.latents.misses == 0


def test_any_fingerprint_change_invalidates(vae_ckpt, tiny_text_encoder, tmp_path):
    base = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path)).build_cache()

    def fps(**kw):
        c = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path), **kw).build_cache()
        return c.latents.fingerprint != base.latents.fingerprint, c.text.fingerprint != base.text.fingerprint

    assert fps() == (False, False)
    assert fps(max_length=12) == (False, True)  # text encoder settings: only the text store
    assert fps(image_size=64) == (False, False)  # only sizes generated images; training pixels are the data's
    assert fps(frozen_dtype="bfloat16") == (True, True)
    assert fps(cache_tag="crop-v2") == (True, False)
    assert fps(lr=5e-4, cache_variants=3) == (False, False)  # what does not change the values keeps the cache
    # other VAE weights (same architecture, same file name elsewhere) → other latents
    other = tmp_path / "other" / "vae.ckpt"
    other.parent.mkdir()
    save_tiny_vae(other, seed=2)
    c = _unet(str(other), tiny_text_encoder, cache_dir=str(tmp_path)).build_cache()
    assert c.latents.fingerprint != base.latents.fingerprint and c.text.fingerprint == base.text.fingerprint
    # the DataModule's transform arguments are part of the latent fingerprint; its loader arguments are not
    from datamodules.synthetic import SyntheticGIDataModule

    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path))
    a = m.build_cache(SyntheticGIDataModule(resolution=32, batch_size=4)).latents.fingerprint
    assert m.build_cache(SyntheticGIDataModule(resolution=32, batch_size=8, num_workers=2)).latents.fingerprint == a
    assert m.build_cache(SyntheticGIDataModule(resolution=32, seed=1)).latents.fingerprint != a
    assert m.build_cache(SyntheticGIDataModule(resolution=64, batch_size=4)).latents.fingerprint != a  # resolution


def test_right_entry_per_sample_id_under_a_shuffled_loader(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path))
    m.fill_cache({"train": make_loader(kvasir_samples, shuffle=False, batch_size=3)})
    m.release_frozen()
    ref = _unet(vae_ckpt, tiny_text_encoder)  # eager: VAE and text encoder in memory
    seen = []
    for batch in make_loader(kvasir_samples, batch_size=4, seed=7):  # another order and batch size
        seen += batch["id"]
        mean, std = m.cached_posterior(batch, "train")
        post = ref.vae.encode(batch["pixel_values"]).latent_dist
        torch.testing.assert_close(mean, post.mean, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(std, post.std, atol=1e-5, rtol=1e-5)
        states, mask = m.encode_prompts(list(batch["caption"]))
        ref_states, ref_mask = ref.encode_prompts(list(batch["caption"]))
        torch.testing.assert_close(states, ref_states, atol=1e-5, rtol=1e-5)
        assert torch.equal(mask, ref_mask)
    assert seen != sorted(seen) and not m.frozen_loaded()


def test_identical_training_with_and_without_the_cache(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    """Fixed seed, no augmentation: same per-step losses and same final weights, CFG dropout included."""
    runs = {}
    for name, kw in (("eager", {}), ("cached", {"cache_dir": str(tmp_path / "c")})):
        pl.seed_everything(0)
        m = _unet(vae_ckpt, tiny_text_encoder, ema_decay=0.9, **kw)
        if name == "cached":
            m.unet.load_state_dict(runs["eager"][0])  # same initial weights (eager init consumed more RNG)
            m.ema = type(m.ema)(m.unet.parameters(), decay=0.9)
        else:
            init = {k: v.clone() for k, v in m.unet.state_dict().items()}
        rec = RecordLosses()
        pl.seed_everything(0)
        _trainer(tmp_path, max_epochs=2, callbacks=[rec]).fit(m, make_loader(kvasir_samples),
                                                               make_loader(kvasir_samples, shuffle=False))
        runs[name] = (init if name == "eager" else None, m, rec)
    eager, cached = runs["eager"][1:], runs["cached"][1:]
    assert len(eager[1].losses) == 4
    assert cached[1].losses == pytest.approx(eager[1].losses, rel=1e-6, abs=1e-7)
    for a, b in zip(eager[0].unet.parameters(), cached[0].unet.parameters()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not any(cached[1].loaded)  # trained without the VAE or the text encoder in memory
    assert cached[0].cache.latents.misses == 16 and cached[0].cache.latents.hits > 0


def test_training_from_a_prefilled_cache_needs_no_pixels_and_raises_on_a_miss(vae_ckpt, tiny_text_encoder,
                                                                             kvasir_samples, tmp_path):
    filler = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path))
    filler.fill_cache({"train": make_loader(kvasir_samples)})
    no_pixels = [{k: v for k, v in s.items() if k != "pixel_values"} for s in kvasir_samples]
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path), cache_on_miss="error")
    rec = RecordLosses()
    _trainer(tmp_path, callbacks=[rec]).fit(m, make_loader(no_pixels))
    assert len(rec.losses) == 2 and not any(rec.loaded) and not m.frozen_loaded()

    unseen = [dict(s, id=s["id"] + "-new") for s in kvasir_samples]
    m2 = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path), cache_on_miss="error", cache_precompute=False)
    with pytest.raises(KeyError, match="msdm cache"):
        _trainer(tmp_path).fit(m2, make_loader(unseen))


class EpochPixels(torch.utils.data.Dataset):
    """Pixels depend on the epoch (a stand-in for epoch-seeded random augmentation): image i at epoch e is i + 10e."""

    def __len__(self):
        return 4

    def __getitem__(self, key):
        i, epoch = key
        return {"pixel_values": torch.full((3, 32, 32), (i + 10 * epoch) / 50.0 - 0.5), "caption": "a polyp",
                "id": f"img{i}"}


def test_augmentation_variants_follow_the_epoch(vae_ckpt, tiny_text_encoder, tmp_path):
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path), cache_variants=2)
    loader = DataLoader(EpochPixels(), batch_size=2, sampler=EpochShuffleSampler(4, seed=0))
    assert m.fill_cache({"train": loader})["train"]["latents"] == 8  # 4 images × 2 variants
    vae = m.vae
    for epoch, variant in ((0, 0), (1, 1), (2, 0), (3, 1)):
        batch = {"id": ["img1", "img3"]}
        mean, _ = m.cache.latent_posterior(batch["id"], "train", epoch)
        px = torch.stack([EpochPixels()[(i, variant)]["pixel_values"] for i in (1, 3)])
        torch.testing.assert_close(mean, vae.encode(px).latent_dist.mean, atol=1e-5, rtol=1e-5)
    # validation always reads variant 0
    assert m.cache.variant_key("val", 5) == "val/v0" and m.cache.variant_key("train", 5) == "train/v1"
    assert loader.sampler.epoch == 0  # the fill pass put the sampler's epoch back


def test_sample_list_dataset_is_indexable():
    assert SampleList([1, 2])[(1, 0)] == 2


def test_per_epoch_captions_are_covered_by_caption_passes(vae_ckpt, tiny_text_encoder):
    from datamodules.synthetic import SyntheticGIDataModule

    dm = SyntheticGIDataModule(num_train=6, num_val=2, resolution=32, batch_size=3, seed=5)
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir="memory", cache_text_epochs=3)
    stats = m.fill_cache({"train": dm.train_dataloader()})
    assert stats["train"]["latents"] == 6 and stats["train"]["batches"] == 6  # pixels once, captions of 3 epochs
    ds = dm.train_set
    for epoch in range(3):
        assert not m.cache.missing_text([ds.caption(i, epoch) for i in range(6)])
    assert m.cache.missing_text([ds.caption(i, e) for i in range(6) for e in range(3, 40)])  # later epochs: new ones


class ListedCaptions(EpochPixels):
    def all_captions(self):
        return ["a polyp", "two polyps", "no polyp"]


def test_a_dataset_can_list_all_its_captions(vae_ckpt, tiny_text_encoder):
    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir="memory")
    m.fill_cache({"train": DataLoader(ListedCaptions(), batch_size=2, sampler=EpochShuffleSampler(4))})
    assert not m.cache.missing_text(["a polyp", "two polyps", "no polyp", ""])


def test_msdm_cache_then_fit_trains_from_the_cache_without_the_frozen_parts(vae_ckpt, tiny_text_encoder, tmp_path,
                                                                          monkeypatch):
    from pathlib import Path

    from lightning_modules.cli import run_lightning_cli
    from msdm.cli import main

    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    overrides = _cache_overrides(vae_ckpt, tiny_text_encoder, tmp_path, num_train=8)
    cfg = str(root / "configs/quickstart_unet.yaml")
    assert main(["cache", "-c", cfg, "--", *overrides]) == 0
    cli = run_lightning_cli(["fit", "-c", cfg, *overrides, "--model.init_args.cache_on_miss=error",
                             "--trainer.max_steps=2", "--trainer.limit_val_batches=0", "--trainer.logger=false",
                             "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    m = cli.model
    assert m.global_step == 2 and not m.frozen_loaded()
    assert m.cache.latents.misses == 0 and m.cache.text.misses == 0  # same fingerprints: the fill pass was skipped


def test_msdm_cache_sharded_by_rank_covers_every_id_once(vae_ckpt, tiny_text_encoder, tmp_path, monkeypatch):
    """Two `msdm cache` processes (as under torchrun/srun) split the ids by hash; a fit then skips its fill pass."""
    from pathlib import Path

    from lightning_modules.cli import run_lightning_cli
    from msdm.cli import main

    root = Path(__file__).resolve().parent.parent
    monkeypatch.chdir(tmp_path)
    overrides = _cache_overrides(vae_ckpt, tiny_text_encoder, tmp_path, num_train=12)
    cfg = str(root / "configs/quickstart_unet.yaml")
    for r in (0, 1):
        assert main(["cache", "-c", cfg, "--rank", str(r), "--world-size", "2", "--", *overrides]) == 0
    shards = {r: list((tmp_path / "cache").glob(f"latents/*/shard-r00{r}-*.safetensors")) for r in (0, 1)}
    assert shards[0] and shards[1]
    from safetensors import safe_open

    counts = {r: sum(len({k.split("/")[0] for k in safe_open(str(p), "pt").keys()}) for p in ps)
              for r, ps in shards.items()}
    assert counts[0] + counts[1] == 16 and counts[0] > 0 and counts[1] > 0  # 12 train + 4 val ids, each once
    cli = run_lightning_cli(["fit", "-c", cfg, *overrides, "--model.init_args.cache_on_miss=error",
                             "--trainer.max_steps=3", "--trainer.limit_val_batches=0", "--trainer.logger=false",
                             "--trainer.accelerator=cpu", "--trainer.enable_progress_bar=false"])
    assert cli.model.global_step == 3 and cli.model.cache.latents.misses == 0 and not cli.model.frozen_loaded()


def test_cache_mode_checkpoint_exports_and_generates(vae_ckpt, tiny_text_encoder, kvasir_samples, tmp_path):
    from msdm.cli import main
    from msdm.pipeline import MSDMPipeline

    m = _unet(vae_ckpt, tiny_text_encoder, cache_dir=str(tmp_path / "c"), latent_scaling="auto")
    tr = _trainer(tmp_path, max_steps=2)
    tr.fit(m, make_loader(kvasir_samples))
    tr.save_checkpoint(tmp_path / "unet.ckpt")
    sd = torch.load(tmp_path / "unet.ckpt", weights_only=True)["state_dict"]
    assert {k.split(".")[0] for k in sd} == {"unet", "latent_scale"} and torch.isfinite(sd["latent_scale"])
    assert main(["export", str(tmp_path / "unet.ckpt"), "--out", str(tmp_path / "pipe")]) == 0  # loads lazily
    pipe = MSDMPipeline.from_pretrained(tmp_path / "pipe")
    assert pipe.vae.config.scaling_factor == pytest.approx(float(sd["latent_scale"]))
    img = m.generate(["Generate an image with 1 polyp."], seed=0, num_inference_steps=2)
    assert img.shape == (1, 3, 32, 32) and m.frozen_loaded()  # generate() loaded the frozen parts on demand
