"""The data path from real frames + masks to training batches with true-fact captions: FactFramesDataset,
FactCaptionDataModule and its configs (print_config and fast_dev_run through ``msdm fit``)."""

from pathlib import Path

import pytest
import torch

from msdm.facts import parse_prompt
from msdm.facts.dataset import FactFramesDataset
from msdm.facts.table import facts_table, list_frames

ROOT = Path(__file__).resolve().parent.parent
LABELS = ROOT / "msdm" / "assets" / "kvasir_seg_overlay_labels.csv"
pytestmark = [pytest.mark.filterwarnings("ignore::UserWarning")]


@pytest.fixture(scope="module")
def frames(kvasir_dir, tmp_path_factory):
    table = facts_table(kvasir_dir, cache_dir=tmp_path_factory.mktemp("facts"))
    return [(stem, image, table[stem]) for stem, image, _ in list_frames(kvasir_dir)]


def _sentences(caption: str) -> list[str]:
    return [s.strip() + "." for s in caption.rstrip(".").split(". ")]


def test_captions_are_true_deterministic_and_change_with_the_epoch(frames):
    ds = FactFramesDataset(frames[:40], resolution=32, seed=3, caption_facts=8, procedure="colonoscopy")
    lengths = set()
    for i in range(len(ds)):
        facts = frames[i][2]
        for epoch in (0, 1):
            cap = ds.caption(i, epoch)
            assert cap == ds.caption(i, epoch) == ds[(i, epoch)]["caption"]
            parsed = parse_prompt(cap)
            assert not parsed["unparsed"] and not parsed["conflicts"], cap
            for k, v in facts.to_facts().items():  # every stated fact is the frame's
                assert parsed[k] in (None, v), (k, cap)
            lengths.add(len(_sentences(cap)))
    assert lengths == set(range(1, max(lengths) + 1)) and max(lengths) >= 5  # 1..K facts per caption
    assert sum(ds.caption(i, 0) != ds.caption(i, 1) for i in range(len(ds))) > 20
    other = FactFramesDataset(frames[:40], resolution=32, seed=4, caption_facts=8)
    assert any(ds.caption(i, 0) != other.caption(i, 0) for i in range(40))
    one = FactFramesDataset(frames[:40], resolution=32, seed=3, caption_facts=1)
    assert all(len(_sentences(one.caption(i, e))) == 1 for i in range(40) for e in range(3))


def test_only_the_chosen_facts_are_stated(frames):
    ds = FactFramesDataset(frames[:30], resolution=32, caption_facts=8, facts=["box"])
    for i in range(30):
        want = ("Generate an image containing a green/black box artefact." if frames[i][2].box
                else "Generate an image not containing a green/black box artefact.")
        assert ds.caption(i, 5) == want
    with pytest.raises(ValueError, match="not facts of a real frame"):
        FactFramesDataset(frames[:3], facts=["instrument_count"])


def test_flips_mirror_pixels_and_location_facts_and_spare_frames_with_overlays(frames):
    from dataclasses import replace

    # text unknown (None) -> never flipped; say it is absent to allow flips of frames without the box
    clean = [(i, p, replace(f, text=False)) for i, p, f in frames[:60]]
    ds = FactFramesDataset(clean, resolution=32, seed=0, caption_facts=1, facts=["polyp_locations"], flips=True)
    plain = FactFramesDataset(clean, resolution=32, seed=0, caption_facts=1, facts=["polyp_locations"])
    flipped = 0
    for i in range(60):
        for epoch in range(4):
            h, v = ds.flip_for(i, epoch)
            if clean[i][2].box:
                assert (h, v) == (False, False)
                continue
            x, x0 = ds[(i, epoch)]["pixel_values"], plain[(i, epoch)]["pixel_values"]
            ref = x0.flip(-1) if h else x0
            ref = ref.flip(-2) if v else ref
            assert torch.equal(x, ref)
            want = clean[i][2].flipped(h, v).polyp_locations
            assert parse_prompt(ds.caption(i, epoch))["polyp_locations"] == want
            flipped += h or v
    assert flipped > 20
    unknown = FactFramesDataset(frames[:60], resolution=32, flips=True)
    assert not any(any(unknown.flip_for(i, e)) for i in range(60) for e in range(4))


def test_datamodule_splits_and_batches(kvasir_dir, tmp_path, monkeypatch):
    from datamodules import FactCaptionDataModule

    monkeypatch.setenv("MSDM_CACHE_DIR", str(tmp_path))
    dm = FactCaptionDataModule(data=str(kvasir_dir), val_fraction=0.2, resolution=32, caption_facts=4, batch_size=8,
                               seed=1)
    dm.setup()
    train_ids = {f[0] for f in dm.train_dataset.frames}
    val_ids = {f[0] for f in dm.val_dataset.frames}
    assert len(train_ids) == 120 and len(val_ids) == 30 and not train_ids & val_ids
    b = next(iter(dm.train_dataloader()))
    assert b["pixel_values"].shape == (8, 3, 32, 32) and b["pixel_values"].min() >= -1
    assert len(b["caption"]) == 8 and all(c.startswith("Generate") for c in b["caption"])
    assert all(i.startswith("kvasir-seg/") for i in b["id"])
    v1, v2 = next(iter(dm.val_dataloader())), next(iter(dm.val_dataloader()))
    assert v1["caption"] == v2["caption"]  # fixed validation captions
    with pytest.raises(ValueError, match="pass data="):
        FactCaptionDataModule()


def test_hand_labels_replace_the_detected_overlays(kvasir_dir, tmp_path, monkeypatch):
    from datamodules import FactCaptionDataModule
    from msdm.facts.table import read_overlay_labels

    monkeypatch.setenv("MSDM_CACHE_DIR", str(tmp_path))
    labels = read_overlay_labels(LABELS)
    dm = FactCaptionDataModule(data=str(kvasir_dir), val_fraction=0, resolution=32, facts=["box", "text"],
                               overlay_labels=str(LABELS), caption_facts=2)
    dm.setup()
    stated = 0
    for i, (fid, _, f) in enumerate(dm.train_dataset.frames):
        assert (f.box, f.text) == tuple(v if v is not None else d for v, d in zip(labels[fid], (f.box, f.text)))
        parsed = parse_prompt(dm.train_dataset.caption(i, 0))
        assert parsed["text"] in (None, labels[fid][1]) and parsed["box"] in (None, f.box)
        stated += parsed["text"] is not None
    assert stated > 50  # text is stated where the labels give it
    bad = tmp_path / "bad.csv"
    bad.write_text("name,box\n")
    with pytest.raises(Exception, match="file, box, text"):
        FactCaptionDataModule(data=str(kvasir_dir), overlay_labels=str(bad)).setup()


def test_configs_fast_dev_run(kvasir_dir, tiny_text_encoder, tmp_path, monkeypatch):
    from msdm.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MSDM_CACHE_DIR", str(tmp_path / "cache"))
    data = [f"--data.init_args.data={kvasir_dir}", "--data.init_args.val_data=null", "--data.init_args.resolution=32",
            "--data.init_args.batch_size=4", f"--data.init_args.overlay_labels={LABELS}"]
    main(["fit", "-c", str(ROOT / "configs/msdm_vae_kvasir_seg.yaml"), "--trainer.fast_dev_run=true",
          "--trainer.accelerator=cpu", "--model.init_args.preset=tiny", *data])
    assert (tmp_path / "runs").exists()
    from lightning_modules import MSDMVAEModule

    vae = tmp_path / "vae"
    MSDMVAEModule(preset="tiny", vae_overrides={"latent_channels": 8}).export(str(vae))  # the configs' 8-channel latent
    main(["fit", "-c", str(ROOT / "configs/msdm_unet_kvasir_seg.yaml"), "--trainer.fast_dev_run=true",
          "--trainer.accelerator=cpu", "--model.init_args.preset=tiny", f"--model.init_args.vae={vae}",
          f"--model.init_args.text_encoder={tiny_text_encoder}", "--model.init_args.max_length=16",
          "--model.init_args.image_size=32", "--model.init_args.num_inference_steps=2", *data])
    assert list(tmp_path.glob("runs/**/samples/*.png")), "the SampleGrid callback wrote no grid"
