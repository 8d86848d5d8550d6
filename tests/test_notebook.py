"""docs/msdm_notebook.ipynb runs top to bottom on tiny models (so the documented notebook never rots)."""

import os
from pathlib import Path

import lightning.pytorch as pl
import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_notebook_executes(tmp_path, kvasir_samples, tiny_text_encoder, monkeypatch):
    """As a user runs it: msdm quickstart wrote msdm_quickstart/ in the project folder, and the notebook is opened
    from the project's docs/ (Jupyter's working directory is the notebook's folder); no variables set."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    from conftest import make_loader

    from lightning_modules import MSDMUNetModule, MSDMVAEModule

    tr = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    tr.strategy.connect(MSDMVAEModule(preset="tiny"))
    tr.save_checkpoint(tmp_path / "vae.ckpt")
    m = MSDMUNetModule(preset="tiny", vae=str(tmp_path / "vae.ckpt"), text_encoder=tiny_text_encoder, max_length=16)
    tr = pl.Trainer(accelerator="cpu", max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    tr.fit(m, make_loader(kvasir_samples))
    quickstart = tmp_path / "project" / "msdm_quickstart"
    (quickstart / "unet" / "checkpoints").mkdir(parents=True)
    tr.save_checkpoint(quickstart / "unet" / "checkpoints" / "last.ckpt")
    m.export(str(quickstart / "pipeline"))
    (tmp_path / "project" / "docs").mkdir()

    env = {"MSDM_STEPS": "2", "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""),
           "OMP_NUM_THREADS": "1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    for k in ("MSDM_PIPELINE", "MSDM_CHECKPOINT"):
        monkeypatch.delenv(k, raising=False)
    nb = nbformat.read(ROOT / "docs/msdm_notebook.ipynb", as_version=4)
    nbclient.NotebookClient(nb, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path / "project" / "docs")}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs)  # the grids were rendered


def test_readme_and_notebook_recommend_the_sampler_benchmarks_found_best():
    """docs/benchmarks.md (Fast sampling) found dpm++sde closest to the reference DDIM-150; the deterministic dpm++
    samples a visibly different distribution. The two places users copy code from must say dpm++sde."""
    import re

    for doc in (ROOT / "README.md", ROOT / "docs" / "msdm_notebook.ipynb"):
        text = doc.read_text()
        samplers = re.findall(r'(?:set_sampler\(|sampler=)\\?"([a-z+]+)\\?"', text)
        assert samplers and set(samplers) == {"dpm++sde"}, (doc.name, samplers)
