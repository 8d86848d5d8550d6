"""``msdm predict`` for the three generators: images from a prompts file in the challenge layout with provenance.

MSDM: the files equal what ``msdm export`` + ``msdm generate`` write for the same checkpoint, seeds and sampler.
Kandinsky and FLUX LoRA: image ``k`` equals the module's own ``generate([prompt], 1, seed=image_seed + k)``.
"""

import json

import lightning.pytorch as pl
import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from lightning_modules.cli import run_lightning_cli
from msdm.provenance import read_record, verify

pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]

PROMPTS = ["Generate an image containing a polyp.", "Generate an image with no polyps."]
N = 2  # images per prompt
IMAGE_SEED = 7


def _save_ckpt(module, path):
    trainer = pl.Trainer(accelerator="cpu", max_steps=0, logger=False, enable_checkpointing=False)
    trainer.strategy.connect(module)
    trainer.save_checkpoint(path)
    return str(path)


def _predict(tmp_path, model: dict, ckpt: str, batch_size=3):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "logger": False, "enable_progress_bar": False},
           "model": model,
           "data": {"class_path": "datamodules.PromptDataModule",
                    "init_args": {"prompts": str(tmp_path / "prompts.txt"), "num_images_per_prompt": N,
                                  "image_seed": IMAGE_SEED, "out": str(tmp_path / "out"), "batch_size": batch_size}}}
    path = tmp_path / "predict.yaml"
    path.write_text(yaml.safe_dump(cfg))
    cli = run_lightning_cli(["predict", "-c", str(path), "--ckpt_path", ckpt])
    return cli, tmp_path / "out"


def _check_layout(out):
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"prompt{p:04d}_img{i:04d}.png" for p in range(1, len(PROMPTS) + 1) for i in range(1, N + 1)]
    assert json.loads((out / "prompts.json").read_text()) == {str(k + 1): p for k, p in enumerate(PROMPTS)}
    report = verify(out)
    assert report.ok, report
    rec = read_record(out / "prompt0002_img0001.png")
    assert rec["synthetic"] and rec["prompt"] == PROMPTS[1] and rec["seed"] == IMAGE_SEED + N  # image k = 2
    assert not list(out.glob(".provenance-r*"))  # shard records merged


def _pixels(path):
    return np.asarray(Image.open(path).convert("RGB"), dtype=np.int16)


def test_msdm_predict_equals_export_then_generate(tmp_path, tiny_text_encoder, capsys):
    from lightning_modules import MSDMUNetModule, MSDMVAEModule
    from msdm.cli import main

    torch.manual_seed(0)
    MSDMVAEModule(preset="tiny").export(str(tmp_path / "vae"))
    args = {"preset": "tiny", "vae": str(tmp_path / "vae"), "text_encoder": tiny_text_encoder, "max_length": 16,
            "ema_decay": 0.9, "sampler": "ddim", "num_inference_steps": 2, "guidance_scale": 4.5, "eta": 1.0}
    module = MSDMUNetModule(**args)
    with torch.no_grad():  # make the EMA differ from the live weights: predict must sample with the EMA
        for p in module.unet.parameters():
            p.add_(0.01)
    ckpt = _save_ckpt(module, tmp_path / "unet.ckpt")
    _, out = _predict(tmp_path, {"class_path": "lightning_modules.MSDMUNetModule", "init_args": args}, ckpt)
    _check_layout(out)
    assert main(["export", ckpt, "--out", str(tmp_path / "pipe")]) == 0
    assert main(["generate", "--pipeline", str(tmp_path / "pipe"), "--prompts", str(tmp_path / "prompts.txt"),
                 "--num-images", str(N), "--out", str(tmp_path / "gen"), "--seed", str(IMAGE_SEED), "--sampler",
                 "ddim", "--steps", "2", "--guidance-scale", "4.5", "--eta", "1.0"]) == 0
    for f in sorted(out.glob("*.png")):
        a, b = _pixels(f), _pixels(tmp_path / "gen" / f.name)
        assert np.abs(a - b).max() <= 1, f.name  # same model, seed and sampler (batching may move a level)
    assert "msdm predict: 4 images" in capsys.readouterr().out


def _lora_case(kind, tmp_path):
    from lightning_modules import FluxLoRAModule, KandinskyLoRAModule
    from msdm.lora.testing import write_tiny_flux, write_tiny_kandinsky_decoder, write_tiny_kandinsky_prior

    if kind == "kandinsky":
        args = {"stage": "decoder", "prior_model": write_tiny_kandinsky_prior(tmp_path / "prior"),
                "decoder_model": write_tiny_kandinsky_decoder(tmp_path / "decoder"), "rank": 4, "height": 32,
                "width": 32, "num_inference_steps": 2, "prior_num_inference_steps": 2, "export_lora": False}
        return KandinskyLoRAModule, "lightning_modules.kandinsky_lora.KandinskyLoRAModule", args
    args = {"model": write_tiny_flux(tmp_path / "flux"), "rank": 4, "frozen_dtype": "float32",
            "max_sequence_length": 16, "height": 32, "width": 32, "num_inference_steps": 2, "export_lora": False,
            "text_cache_dir": "memory"}
    return FluxLoRAModule, "lightning_modules.flux_lora.FluxLoRAModule", args


@pytest.mark.parametrize("kind", ["kandinsky", "flux"])
def test_lora_predict_writes_each_images_own_seed(kind, tmp_path):
    cls, class_path, args = _lora_case(kind, tmp_path)
    torch.manual_seed(0)
    module = cls(**args)
    with torch.no_grad():  # a non-zero LoRA (B starts at 0), so the checkpoint's weights matter
        for n, p in module.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    ckpt = _save_ckpt(module, tmp_path / "lora.ckpt")
    cli, out = _predict(tmp_path, {"class_path": class_path, "init_args": args}, ckpt)
    _check_layout(out)
    ref = cli.model.generate([PROMPTS[1]], 1, seed=IMAGE_SEED + N)  # image k = 2: prompt 2, image 1
    expect = (ref[0].mul(255).add(0.5).clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()).astype(np.int16)
    assert np.abs(_pixels(out / "prompt0002_img0001.png") - expect).max() <= 1
    for n, p in module.state_dict().items():
        assert torch.equal(p, cli.model.state_dict()[n])  # the checkpoint's LoRA weights generated them


@pytest.mark.ddp
@pytest.mark.slow
def test_msdm_predict_shards_over_two_ddp_processes(tmp_path, tiny_text_encoder):
    """2 CPU processes (gloo): image k on rank k mod 2 with seed image_seed + k; one complete folder, the same
    images as one process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    from lightning_modules import MSDMUNetModule, MSDMVAEModule

    root = Path(__file__).resolve().parent.parent
    torch.manual_seed(0)
    MSDMVAEModule(preset="tiny").export(str(tmp_path / "vae"))
    args = {"preset": "tiny", "vae": str(tmp_path / "vae"), "text_encoder": tiny_text_encoder, "max_length": 16,
            "num_inference_steps": 2}
    ckpt = _save_ckpt(MSDMUNetModule(**args), tmp_path / "unet.ckpt")
    _, single = _predict(tmp_path, {"class_path": "lightning_modules.MSDMUNetModule", "init_args": args}, ckpt)
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "msdm", "predict", "-c", str(tmp_path / "predict.yaml"),
                           "--ckpt_path", ckpt, "--trainer.devices=2", "--trainer.strategy=ddp",
                           "--data.out", str(tmp_path / "ddp")], env=env, cwd=tmp_path, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ddp = tmp_path / "ddp"
    _check_layout(ddp)
    for f in sorted(single.glob("*.png")):
        assert read_record(ddp / f.name)["seed"] == read_record(f)["seed"]
        assert np.abs(_pixels(f) - _pixels(ddp / f.name)).max() <= 1, f.name
