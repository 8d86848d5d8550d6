"""``msdm generate`` sharded over ranks: the union of the ranks' images is exactly the single-process output, with
--rank/--world-size and under torchrun; the folder-level files (prompts.json, provenance.json) come once every share is done."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from msdm.cli import main
from msdm.generators import env_rank_world
from msdm.testing import build_tiny_pipeline

ROOT = Path(__file__).resolve().parent.parent
PROMPTS = "Generate an image containing a polyp.\nGenerate an image with no polyps.\nGenerate an image with 1 instrument.\n"


@pytest.fixture(scope="module")
def pipe_dir(tmp_path_factory, tiny_text_encoder):
    d = tmp_path_factory.mktemp("pipe")
    build_tiny_pipeline(tiny_text_encoder).save_pretrained(d / "pipe")
    (d / "prompts.txt").write_text(PROMPTS)
    return d


def _gen(pipe_dir, out, *extra):
    return main(["generate", "--pipeline", str(pipe_dir / "pipe"), "--prompts", str(pipe_dir / "prompts.txt"),
                 "--num-images", "3", "--out", str(out), "--steps", "2", "--batch-size", "2", "--sampler", "dpm++",
                 *extra])


def _images(folder):
    return {p.name: np.asarray(Image.open(p)) for p in sorted(Path(folder).glob("*.png"))}


def test_rank_shards_union_equals_one_process(pipe_dir, tmp_path):
    assert _gen(pipe_dir, tmp_path / "one") == 0
    for r in (1, 0):
        assert _gen(pipe_dir, tmp_path / "two", "--rank", str(r), "--world-size", "2") == 0
        if r == 1:  # one share done: its images and the folder's prompts (written when it is claimed), no manifest yet
            assert len(_images(tmp_path / "two")) == 4  # images 1, 3, 5, 7 of 0..8
            assert (tmp_path / "two" / "prompts.json").exists()
            assert not (tmp_path / "two" / "provenance.json").exists()
    # the last share to finish wrote prompts.json and the merged provenance manifest, then removed the records
    assert not list((tmp_path / "two").glob(".provenance-*"))
    assert main(["provenance", str(tmp_path / "two")]) == 0  # every image and prompts.json verified
    one, two = _images(tmp_path / "one"), _images(tmp_path / "two")
    assert sorted(one) == sorted(two) and len(one) == 9
    for name in one:
        assert np.abs(one[name].astype(int) - two[name].astype(int)).max() <= 1  # batch composition: ±1 grey level
    assert json.loads((tmp_path / "two" / "prompts.json").read_text())["3"] == "Generate an image with 1 instrument."


def test_env_rank_world(monkeypatch):
    for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID"):
        monkeypatch.delenv(k, raising=False)
    assert env_rank_world() == (0, 1, 0)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert env_rank_world() == (5, 8, 1)
    monkeypatch.setenv("RANK", "2")
    monkeypatch.setenv("WORLD_SIZE", "4")
    assert env_rank_world() == (2, 4, 0)  # torchrun's variables win


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.ddp
@pytest.mark.slow
def test_generate_under_torchrun(pipe_dir, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}",
           "-m", "msdm", "generate", "--pipeline", str(pipe_dir / "pipe"), "--prompts", str(pipe_dir / "prompts.txt"),
           "--num-images", "3", "--out", str(tmp_path / "tr"), "--steps", "2", "--batch-size", "2", "--sampler", "dpm++",
           "--device", "cpu"]
    proc = subprocess.run(cmd, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "rank 0 of 2" in proc.stdout and "rank 1 of 2" in proc.stdout
    assert _gen(pipe_dir, tmp_path / "one") == 0
    one, tr = _images(tmp_path / "one"), _images(tmp_path / "tr")
    assert sorted(one) == sorted(tr)
    assert (tmp_path / "tr" / "prompts.json").exists()
    assert main(["provenance", str(tmp_path / "tr")]) == 0
