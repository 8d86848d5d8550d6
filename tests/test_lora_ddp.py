"""FluxLoRAModule under 2-process CPU DDP (gloo): ranks agree, per-rank cache shards, LoRA-only checkpoint."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from msdm.lora.testing import write_tiny_flux

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.ddp
@pytest.mark.slow
def test_flux_lora_ddp_two_cpu_processes(tmp_path, kvasir_dir):
    flux = write_tiny_flux(tmp_path / "flux")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, str(ROOT / "tests/scripts/ddp_fit_flux_lora.py"), str(kvasir_dir / "images"), flux,
           str(tmp_path)]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["checksum"] == pytest.approx(ranks[1]["checksum"], rel=1e-12)  # LoRA gradients all-reduced
    # Each rank encoded its own half of the 8 samples and wrote its own shards.
    assert ranks[0]["misses"] == ranks[1]["misses"] == 4
    shards = sorted(p.name for p in (tmp_path / "cache").glob("*/shard-*.safetensors"))
    assert {s[:10] for s in shards} == {"shard-r000", "shard-r001"}
    ckpt = torch.load(ranks[0]["ckpt"], weights_only=True)
    assert ckpt["state_dict"] and all("lora_" in k for k in ckpt["state_dict"])
    assert (tmp_path / "lora" / "pytorch_lora_weights.safetensors").exists()
