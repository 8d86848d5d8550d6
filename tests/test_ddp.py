"""2-process CPU DDP (gloo): every sample seen exactly once per epoch across ranks; ranks end with equal weights."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

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

    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tests/scripts/ddp_fit_unet.py"), str(kvasir_dir / "images"),
           tiny_text_encoder, str(vae_ckpt), str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    all_ids = sorted(p.stem for p in (kvasir_dir / "images").iterdir())[:8]
    for epoch in ("0", "1"):
        seen = ranks[0]["ids"][epoch] + ranks[1]["ids"][epoch]
        assert sorted(seen) == all_ids  # each sample exactly once per epoch, across both ranks
        assert not set(ranks[0]["ids"][epoch]) & set(ranks[1]["ids"][epoch])
    assert ranks[0]["ids"]["0"] != ranks[0]["ids"]["1"]  # reshuffled per epoch
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)  # gradients were all-reduced
