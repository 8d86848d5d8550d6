"""2-process CPU DDP (gloo): every sample seen exactly once per epoch across ranks; ranks end with equal weights."""

from pathlib import Path

import pytest
from conftest import run_rank_script

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ddp
@pytest.mark.slow
def test_ddp_two_cpu_processes_cover_the_epoch_and_agree(tmp_path, kvasir_dir, tiny_text_encoder):
    import lightning.pytorch as pl

    from lightning_modules import MSDMVAEModule

    vae_ckpt = tmp_path / "vae.ckpt"
    trainer = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(MSDMVAEModule(preset="tiny"))
    trainer.save_checkpoint(vae_ckpt)

    ranks = run_rank_script("ddp_fit_unet.py", kvasir_dir / "images", tiny_text_encoder, vae_ckpt, tmp_path,
                            cwd=tmp_path)
    assert all(r["world_size"] == 2 for r in ranks)
    all_ids = sorted(p.stem for p in (kvasir_dir / "images").iterdir())[:8]
    for epoch in ("0", "1"):
        seen = ranks[0]["ids"][epoch] + ranks[1]["ids"][epoch]
        assert sorted(seen) == all_ids  # each sample exactly once per epoch, across both ranks
        assert not set(ranks[0]["ids"][epoch]) & set(ranks[1]["ids"][epoch])
    assert ranks[0]["ids"]["0"] != ranks[0]["ids"]["1"]  # reshuffled per epoch
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)  # gradients were all-reduced
