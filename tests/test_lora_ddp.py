"""FluxLoRAModule under 2-process CPU DDP (gloo): ranks agree, per-rank cache shards, LoRA-only checkpoint."""

from pathlib import Path

import pytest
import torch
from conftest import run_rank_script

from msdm.lora.testing import write_tiny_flux

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ddp
@pytest.mark.slow
def test_flux_lora_ddp_two_cpu_processes(tmp_path, kvasir_dir):
    flux = write_tiny_flux(tmp_path / "flux")
    ranks = run_rank_script("ddp_fit_flux_lora.py", kvasir_dir / "images", flux, tmp_path, cwd=tmp_path)
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)  # LoRA gradients all-reduced
    # Each rank encoded its own half of the 8 samples and wrote its own shards.
    assert ranks[0]["misses"] == ranks[1]["misses"] == 4
    shards = sorted(p.name for p in (tmp_path / "cache").glob("*/shard-*.safetensors"))
    assert {s[:10] for s in shards} == {"shard-r000", "shard-r001"}
    ckpt = torch.load(ranks[0]["ckpt"], weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").exists()
