"""2-process CPU DDP with the synthetic DataModule's epoch sampler and the latent + text cache: every sample exactly
once per epoch across ranks, per-rank cache shards read by the other rank, frozen parts never in memory during
training steps, equal weights on both ranks, and a validation loss equal to the single-process value."""

from pathlib import Path

import pytest
from conftest import run_rank_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_synthetic_datamodule_with_cache_covers_each_epoch_and_matches_one_process(tmp_path, tiny_text_encoder):
    import lightning.pytorch as pl
    import torch

    from datamodules.synthetic import SyntheticGIDataModule
    from lightning_modules import MSDMUNetModule, MSDMVAEModule

    vae_ckpt = tmp_path / "vae.ckpt"
    pl.seed_everything(0)
    trainer = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(MSDMVAEModule(preset="tiny"))
    trainer.save_checkpoint(vae_ckpt)
    cache = tmp_path / "cache"

    ranks = run_rank_script("ddp_fit_unet_cached.py", tiny_text_encoder, vae_ckpt, tmp_path, cache, cwd=tmp_path,
                            timeout=900)
    assert all(r["world_size"] == 2 for r in ranks)

    all_ids = sorted(f"synthetic-train-s3-{i:06d}" for i in range(8))
    for epoch in ("0", "1"):
        seen = ranks[0]["ids"][epoch] + ranks[1]["ids"][epoch]
        assert sorted(seen) == all_ids  # each sample exactly once per epoch, across both ranks
    assert set(ranks[0]["ids"]["0"]) != set(ranks[0]["ids"]["1"])  # reshuffled: rank 0 reads rank 1's entries
    assert not any(ranks[0]["loaded"]) and not any(ranks[1]["loaded"])  # VAE / text encoder never in memory
    # each rank encoded only its own share in the fill pass (4 train + 2 val images); training steps only hit
    assert all(r["latent_misses"] == 6 for r in ranks) and all(r["latent_hits"] >= 8 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)  # gradients were all-reduced

    # each rank wrote only its own shards, and both ranks' shards are there
    shards = sorted(p.name for p in cache.glob("latents/*/shard-*.safetensors"))
    assert {s.split("-")[1] for s in shards} == {"r000", "r001"}
    assert len(list(cache.glob("latents/*/filled-train-n8-v1-t2-ddp-*of2.json"))) == 2

    # the synced validation loss equals the single-process validation of the same weights
    pl.seed_everything(0)
    single = MSDMUNetModule(preset="tiny", vae=str(vae_ckpt), text_encoder=tiny_text_encoder, max_length=16)
    single.unet.load_state_dict(torch.load(tmp_path / "unet.pt", weights_only=True))
    dm = SyntheticGIDataModule(num_train=8, num_val=4, resolution=32, batch_size=2, seed=3)
    out = pl.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                     enable_model_summary=False).validate(single, datamodule=dm, verbose=False)[0]["val/loss"]
    assert ranks[0]["val_loss"] == pytest.approx(out, rel=1e-5)
    assert ranks[1]["val_loss"] == pytest.approx(out, rel=1e-5)
