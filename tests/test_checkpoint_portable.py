"""A U-Net checkpoint loads and exports from anywhere (issue 23): it carries a copy of the VAE it was trained on,
so neither a relative ``vae`` path, another working directory nor a VAE file that is gone breaks
``load_from_checkpoint`` or ``msdm export``; ``--vae`` / ``vae=`` override it, and an older checkpoint without a
copy whose VAE is missing is one line naming the fix."""

import os
import shutil

import lightning.pytorch as pl
import pytest
import torch
from conftest import make_loader, save_tiny_vae

from msdm.cli import main
from msdm.models.loading import EMBEDDED_VAE, load_vae


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k].float(), sb[k].float()) for k in sa)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, kvasir_samples, tiny_text_encoder):
    """A U-Net trained two steps on a VAE given by a *relative* path; the VAE file is then gone."""
    from lightning_modules import MSDMUNetModule

    run = tmp_path_factory.mktemp("run")
    cwd = os.getcwd()
    os.chdir(run)
    try:
        save_tiny_vae(run / "vae.ckpt", seed=1)
        vae = load_vae(run / "vae.ckpt")
        pl.seed_everything(0)
        m = MSDMUNetModule(preset="tiny", vae="vae.ckpt", text_encoder=tiny_text_encoder, max_length=16,
                           num_inference_steps=2, lr=1e-3)
        tr = pl.Trainer(accelerator="cpu", max_steps=2, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
        tr.fit(m, make_loader(kvasir_samples))
        tr.save_checkpoint(run / "unet.ckpt")
    finally:
        os.chdir(cwd)
    moved = tmp_path_factory.mktemp("elsewhere") / "unet.ckpt"
    shutil.move(run / "unet.ckpt", moved)
    os.remove(run / "vae.ckpt")  # another machine: the VAE the U-Net was trained on is not there
    other = save_tiny_vae(tmp_path_factory.mktemp("other") / "vae2.ckpt", seed=2)
    return {"ckpt": moved, "vae": vae, "other": other, "unet": m.unet}


def test_load_from_checkpoint_anywhere(trained, tmp_path, monkeypatch):
    from lightning_modules import MSDMUNetModule

    monkeypatch.chdir(tmp_path)
    m = MSDMUNetModule.load_from_checkpoint(trained["ckpt"], map_location="cpu")
    assert _same_weights(m.vae, trained["vae"]) and _same_weights(m.unet, trained["unet"])
    assert EMBEDDED_VAE in torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    m2 = MSDMUNetModule.load_from_checkpoint(trained["ckpt"], map_location="cpu", vae=trained["other"])
    assert _same_weights(m2.vae, load_vae(trained["other"])) and not _same_weights(m2.vae, trained["vae"])


def test_export_from_another_directory_and_with_vae(trained, tmp_path, monkeypatch):
    from msdm.pipeline import MSDMPipeline

    monkeypatch.chdir(tmp_path)
    assert main(["export", str(trained["ckpt"]), "--out", "pipe"]) == 0
    assert _same_weights(MSDMPipeline.from_pretrained("pipe").vae, trained["vae"])
    assert main(["export", str(trained["ckpt"]), "--out", "pipe2", "--vae", trained["other"]]) == 0
    assert _same_weights(MSDMPipeline.from_pretrained("pipe2").vae, load_vae(trained["other"]))


def test_an_old_checkpoint_without_its_vae_is_one_line(trained, tmp_path, capsys):
    ckpt = torch.load(trained["ckpt"], map_location="cpu", weights_only=True)
    del ckpt[EMBEDDED_VAE]  # as msdm saved them before the copy
    old = tmp_path / "old.ckpt"
    torch.save(ckpt, old)
    capsys.readouterr()
    assert main(["export", str(old), "--out", str(tmp_path / "p")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "vae.ckpt" in err and "--vae PATH" in err and "Traceback" not in err
    assert main(["export", str(old), "--out", str(tmp_path / "p"), "--vae", trained["other"]]) == 0
