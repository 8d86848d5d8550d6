"""Provenance: PNG records round-trip, the manifest catches modified / missing / extra files, ``msdm generate`` and
``SampleGrid`` write both."""

import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from msdm.cli import main
from msdm.provenance import (
    CHUNK_KEY,
    DIGITAL_SOURCE_TYPE,
    MANIFEST_NAME,
    make_record,
    pixel_sha256,
    read_manifest,
    read_record,
    save_png,
    update_manifest,
    verify,
)

INFO = {"model": "MSDM-tiny", "revision": "epoch=3,step=120", "sampler": "ddim", "steps": 50,
        "guidance_scale": 4.5, "guidance_convention": "diffusers: uncond + s*(cond - uncond)", "eta": 1.0}


def _img(seed, size=16):
    return np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)


@pytest.fixture
def folder(tmp_path):
    entries = {}
    for k in range(3):
        rec = make_record("Generate an image containing a polyp, größe ≥ 5 mm.", 7 + k, INFO, image_index=k + 1)
        entries[f"img{k}.png"] = save_png(_img(k), tmp_path / f"img{k}.png", rec)
    update_manifest(tmp_path, entries, generation=INFO)
    return tmp_path


def test_record_round_trips_with_standard_chunks(folder):
    rec = read_record(folder / "img1.png")
    assert rec["synthetic"] is True and rec["digital_source_type"] == DIGITAL_SOURCE_TYPE
    assert rec["prompt"] == "Generate an image containing a polyp, größe ≥ 5 mm."  # UTF-8 survives (iTXt)
    assert rec["seed"] == 8 and rec["image_index"] == 2
    for k, v in INFO.items():
        assert rec[k] == v
    assert rec["msdm_version"]
    with Image.open(folder / "img1.png") as im:
        assert im.info["Description"] == rec["prompt"]
        assert im.info["Source"] == "MSDM-tiny epoch=3,step=120"
        assert "Synthetic" in im.info["Comment"] and im.info["Software"].startswith("msdm ")
        assert "trainedAlgorithmicMedia" in im.info["XML:com.adobe.xmp"]
        assert rec["pixel_sha256"] == pixel_sha256(im)
        np.testing.assert_array_equal(np.asarray(im), _img(1))  # lossless
    assert verify(folder).ok and verify(folder / "img1.png").ok


def test_same_inputs_give_byte_identical_files(tmp_path):
    rec = make_record("p", 1, INFO)
    a = save_png(_img(0), tmp_path / "a.png", rec)
    b = save_png(_img(0), tmp_path / "b.png", rec)
    assert a == b  # no timestamp in the image: regenerating reproduces the manifest hash


def test_modified_image_fails(folder):
    # an edit that keeps the metadata (the record and its chunks are copied over): pixels and hash both differ
    with Image.open(folder / "img0.png") as im:
        info, arr = im.info, np.asarray(im).copy()
    arr[0, 0] ^= 1
    from PIL import PngImagePlugin

    meta = PngImagePlugin.PngInfo()
    meta.add_itxt(CHUNK_KEY, info[CHUNK_KEY])
    Image.fromarray(arr).save(folder / "img0.png", pnginfo=meta)
    rep = verify(folder)
    assert not rep.ok
    kinds = {(f.path, f.kind) for f in rep.findings}
    assert kinds == {("img0.png", "modified"), ("img0.png", "pixels-modified")}
    single = verify(folder / "img0.png")
    assert {f.kind for f in single.findings} == {"modified", "pixels-modified"}


def test_metadata_only_change_is_a_modified_file_but_same_pixels(folder):
    with Image.open(folder / "img2.png") as im:
        im.load()
        im.save(folder / "img2.png")  # re-saved without the chunks
    kinds = {(f.path, f.kind) for f in verify(folder).findings}
    assert kinds == {("img2.png", "modified"), ("img2.png", "no-record")}


def test_missing_and_extra_files(folder):
    (folder / "img1.png").unlink()
    shutil.copy(folder / "img0.png", folder / "copy.png")
    kinds = {(f.path, f.kind) for f in verify(folder).findings}
    assert kinds == {("img1.png", "missing"), ("copy.png", "extra")}


def test_manifest_update_is_a_merge_and_json(folder):
    (folder / "notes.txt").write_text("x")
    update_manifest(folder, {"notes.txt": None})
    man = read_manifest(folder)
    assert set(man["files"]) == {"img0.png", "img1.png", "img2.png", "notes.txt"}
    assert man["generation"] == INFO and json.loads((folder / MANIFEST_NAME).read_text())
    assert verify(folder).ok
    assert not list(folder.glob(".*tmp*"))  # atomic writes leave no temporaries


def test_no_manifest_is_reported(tmp_path):
    save_png(_img(0), tmp_path / "a.png", make_record("p", 0, INFO))
    assert [f.kind for f in verify(tmp_path).findings] == ["no-manifest"]


def test_provenance_command(folder, capsys):
    assert main(["provenance", str(folder / "img0.png")]) == 0
    out = capsys.readouterr().out
    assert "MSDM-tiny" in out and "synthetic" in out and "OK" in out
    assert main(["provenance", str(folder), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    (folder / "img2.png").write_bytes((folder / "img2.png").read_bytes() + b"\0")
    assert main(["provenance", str(folder)]) == 1
    assert "modified" in capsys.readouterr().out


@pytest.fixture(scope="module")
def tiny_pipeline(tmp_path_factory, tiny_text_encoder):
    """A saved MSDMPipeline of random tiny components (no training: provenance does not care what it draws)."""
    from msdm.generators.samplers import make_sampler
    from msdm.models.presets import build_unet, build_vae
    from msdm.models.text_encoder import load_text_encoder, text_hidden_size
    from msdm.pipeline import MSDMPipeline

    torch.manual_seed(0)
    tok, te = load_text_encoder(tiny_text_encoder, max_length=16)
    pipe = MSDMPipeline(vae=build_vae("tiny"), unet=build_unet("tiny", text_hidden_size(te)), text_encoder=te,
                        tokenizer=tok, scheduler=make_sampler("ddim"), resolution=32)
    path = tmp_path_factory.mktemp("pipe") / "tiny-msdm"
    pipe.save_pretrained(path)
    return path


def test_generate_writes_provenance(tiny_pipeline, tmp_path, capsys):
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Generate an image containing a polyp.\nGenerate an image with no polyps.\n")
    out = tmp_path / "gen"
    assert main(["generate", "--pipeline", str(tiny_pipeline), "--prompts", str(prompts), "--num-images", "2",
                 "--out", str(out), "--steps", "2", "--seed", "100", "--batch-size", "3"]) == 0
    rep = verify(out)
    assert rep.ok, rep.findings
    assert set(read_manifest(out)["files"]) == {"prompts.json", *(f"prompt{p:04d}_img{i:04d}.png"
                                                                  for p in (1, 2) for i in (1, 2))}
    rec = read_record(out / "prompt0002_img0001.png")
    assert rec["prompt"] == "Generate an image with no polyps." and rec["synthetic"] is True
    assert rec["seed"] == 102 and (rec["prompt_index"], rec["image_index"]) == (2, 1)  # seed + k, k = 1 * 2 + 0
    assert rec["model"] == "MSDM (tiny-msdm)" and rec["revision"].startswith("sha256:")
    assert (rec["sampler"], rec["steps"], rec["guidance_scale"]) == ("ddim", 2, 4.5)
    assert "uncond" in rec["guidance_convention"] and str(tmp_path) not in json.dumps(rec)  # no local paths

    # the recorded seed reproduces the image on its own
    from msdm.pipeline import MSDMPipeline, images_to_uint8

    pipe = MSDMPipeline.from_pretrained(str(tiny_pipeline))
    pipe.set_progress_bar_config(disable=True)
    img = pipe([rec["prompt"]], generator=[torch.Generator().manual_seed(rec["seed"])], output_type="pt",
               num_inference_steps=rec["steps"], guidance_scale=rec["guidance_scale"], eta=rec["eta"]).images
    got = np.asarray(Image.open(out / "prompt0002_img0001.png")).astype(int)
    assert np.abs(images_to_uint8(img)[0].astype(int) - got).max() <= 1

    assert main(["provenance", str(out)]) == 0
    (out / "prompt0001_img0002.png").unlink()
    assert main(["provenance", str(out)]) == 1


def test_generate_uses_the_folders_guidance_unless_given(tiny_pipeline, tmp_path):
    import shutil

    folder = tmp_path / "g7"
    shutil.copytree(tiny_pipeline, folder)
    index = json.loads((folder / "model_index.json").read_text())
    (folder / "model_index.json").write_text(json.dumps({**index, "guidance_scale": 7.0}))
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("Generate an image containing a polyp.\n")
    for extra, expected in (([], 7.0), (["--guidance-scale", "2.5"], 2.5)):
        out = tmp_path / f"gen{expected}"
        assert main(["generate", "--pipeline", str(folder), "--prompts", str(prompts), "--num-images", "1",
                     "--out", str(out), "--steps", "2", *extra]) == 0
        assert read_record(out / "prompt0001_img0001.png")["guidance_scale"] == expected


def test_sample_grid_writes_provenance(tmp_path):
    import lightning.pytorch as pl

    from lightning_modules import SampleGrid

    class TinyGenerator(pl.LightningModule):
        """The generator protocol (docs/CONVENTIONS.md) on a one-parameter model: image k is a colour from seed + k."""

        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def training_step(self, batch, _):
            return (self.w - batch[0].mean()) ** 2

        def validation_step(self, batch, _):
            pass

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

        def generate(self, prompts, num_images_per_prompt=1, seed=None, **_):
            n = len(prompts) * num_images_per_prompt
            return torch.stack([torch.rand(3, 1, 1, generator=torch.Generator().manual_seed(seed + k)).expand(3, 8, 8)
                                for k in range(n)])

        def generation_info(self):
            return {"model": "tiny-colour", "revision": f"step={self.global_step}", "sampler": "none", "steps": 0,
                    "guidance_scale": 1.0, "guidance_convention": "none"}

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.rand(4, 1)), batch_size=2)
    tr = pl.Trainer(accelerator="cpu", max_epochs=2, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, default_root_dir=tmp_path,
                    callbacks=[SampleGrid(prompts=["a polyp", "no polyp"], num_images_per_prompt=3, seed=5)])
    tr.fit(TinyGenerator(), data, data)
    samples = tmp_path / "samples"
    assert sorted(p.name for p in samples.glob("*.png")) == ["epoch=0000.png", "epoch=0001.png"]
    assert verify(samples).ok
    rec = read_record(samples / "epoch=0001.png")
    assert rec["prompts"] == ["a polyp", "no polyp"] and rec["seed"] == 5 and rec["kind"] == "grid"
    assert rec["model"] == "tiny-colour" and rec["revision"] == "step=4" and rec["epoch"] == 1
    assert rec["synthetic"] is True and rec["num_images_per_prompt"] == 3
    # generated prompt by prompt (under a progress bar), seeded seed + p·n: the grid of one generate() call
    from msdm.provenance import save_grid

    whole = TinyGenerator().generate(["a polyp", "no polyp"], num_images_per_prompt=3, seed=5)
    save_grid(whole, tmp_path / "whole.png", ["a polyp", "no polyp"], 5, {})
    assert np.array_equal(np.asarray(Image.open(tmp_path / "whole.png")), np.asarray(Image.open(samples / "epoch=0001.png")))
