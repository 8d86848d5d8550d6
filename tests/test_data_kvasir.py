"""KvasirVQADataModule: the three sources from local copies, the image-level split, epoch-dependent prompts,
paraphrase strategies in batches, original prompts at validation, prompt-aware flips."""

import pytest
import torch

from datamodules.kvasir import KvasirVQADataModule
from msdm.data.facts import keeps_facts
from tests.data_fixtures import *  # noqa: F403 (session fixtures: local copies of each source)

RES = 32


def _check_batch(b, channels=3, batch=None):
    x = b["pixel_values"]
    assert x.dtype == torch.float32 and x.ndim == 4 and x.shape[1:] == (channels, RES, RES)
    assert batch is None or x.shape[0] == batch
    assert x.min() >= -1 and x.max() <= 1 and x.min() < -0.5 and x.max() > 0.5  # real images span the range
    assert isinstance(b["caption"], list) and all(isinstance(c, str) and c for c in b["caption"])
    assert isinstance(b["id"], list) and len(b["id"]) == len(b["caption"]) == x.shape[0]


def _dm(devset, **kw):
    kw.setdefault("resolution", RES)
    kw.setdefault("batch_size", 8)
    dm = KvasirVQADataModule(source="medvqa2024", data=str(devset), **kw)
    dm.setup("fit")
    return dm


def test_medvqa2024_layout_batches_and_split(kvasir_devset):
    dm = _dm(kvasir_devset)
    r = dm.report
    assert r["train_images"] + r["val_images"] == 150 and r["val_images"] == 15 and r["skipped_total"] == 0
    b = next(iter(dm.train_dataloader()))
    _check_batch(b, batch=8)
    assert "caption_original" not in b  # strategy none
    prompts = {rec.id: rec.prompts for rec in dm.train_dataset.records}
    assert all(c in prompts[i] for c, i in zip(b["caption"], b["id"]))
    train_ids = {rec.id for rec in dm.train_dataset.records}
    val_ids = {rec.id for rec in dm.val_dataset.records}
    assert not train_ids & val_ids and len(train_ids | val_ids) == 150
    # validation: every (image, original prompt) pair once, in order
    vb = [x for batch in dm.val_dataloader() for x in zip(batch["id"], batch["caption"])]
    expected = [(rec.id, p) for rec in dm.val_dataset.records for p in rec.prompts]
    assert vb == expected and len(vb) == r["val_items"]


def test_split_is_stable_under_the_seed(kvasir_devset):
    a = {rec.id for rec in _dm(kvasir_devset, seed=1).val_dataset.records}
    assert a == {rec.id for rec in _dm(kvasir_devset, seed=1).val_dataset.records}
    assert a != {rec.id for rec in _dm(kvasir_devset, seed=2).val_dataset.records}


def test_each_epoch_draws_one_prompt_per_image_even_in_persistent_workers(kvasir_devset):
    dm = _dm(kvasir_devset, num_workers=2, persistent_workers=True, batch_size=45)
    ds = dm.train_dataset
    multi = [i for i, rec in enumerate(ds.records) if len(rec.prompts) > 1]
    assert len({ds.caption_for(i, e)[0] for i in multi[:1] for e in range(10)}) > 1  # the draw changes with epochs
    loader = dm.train_dataloader()
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)  # what Lightning's fit loop does
        got = {(i, c) for b in loader for i, c in zip(b["id"], b["caption"])}
        want = {(ds.records[k].id, ds.caption_for(k, epoch)[0]) for k in range(len(ds))}
        assert got == want and len(got) == len(ds)  # each image once, with the caption of this epoch


def test_add_strategy_with_rule_paraphrases_and_original_prompts_at_validation(kvasir_devset):
    dm = _dm(kvasir_devset, paraphrases="rules:3", paraphrase_strategy="add", batch_size=135)
    assert dm.report["prompts_with_paraphrases"] == dm.report["unique_train_prompts"]
    b = next(iter(dm.train_dataloader()))
    assert len(b["caption_original"]) == 135
    paraphrased = [(c, o) for c, o in zip(b["caption"], b["caption_original"]) if c != o]
    assert 0.5 < len(paraphrased) / 135 < 0.95  # add with 3 per prompt: expected 3/4 paraphrases
    assert all(keeps_facts(o, c) and c in dm.train_dataset.paraphrases[o] for c, o in paraphrased)
    originals = {p for rec in dm.val_dataset.records for p in rec.prompts}
    vb = next(iter(dm.val_dataloader()))
    assert "caption_original" not in vb and set(vb["caption"]) <= originals


def test_prompt_aware_flips_never_move_named_locations(kvasir_devset):
    dm = _dm(kvasir_devset, augment="prompt_aware", hflip_p=1.0, vflip_p=1.0)
    ds = dm.train_dataset
    located = next(i for i, rec in enumerate(ds.records) if any("located in the" in p for p in rec.prompts))
    free = [i for i, rec in enumerate(ds.records) if not any("located" in p for p in rec.prompts)]
    plain = ds.transform(ds._load(located))
    for epoch in range(3):
        assert torch.equal(ds[(located, epoch)]["pixel_values"], plain)  # no flip, no shifted crop
    assert free  # an image whose prompts name no place is flipped (p=1)
    i = free[0]
    assert torch.equal(ds[i]["pixel_values"], ds.transform(ds._load(i), hflip=True, vflip=True))
    # validation never augments
    vds = dm.val_dataset
    assert torch.equal(vds[0]["pixel_values"], vds.transform(vds._load(0)))


def test_kvasir_vqa_hub_layout_with_2025_captions(kvasir_vqa_hf):
    path, captions, caps = kvasir_vqa_hf
    dm = KvasirVQADataModule(source="kvasir-vqa", data=str(path), captions=str(captions), resolution=RES, batch_size=4)
    dm.setup("fit")
    assert dm.report["train_images"] + dm.report["val_images"] == 24  # 72 QA rows → 24 images
    b = next(iter(dm.train_dataloader()))
    _check_batch(b, batch=4)
    for c, i in zip(b["caption"], b["id"]):
        assert c in caps[i]["prompt_a"] + caps[i]["prompt_b"]
    with pytest.raises(ValueError, match="captions="):
        KvasirVQADataModule(source="kvasir-vqa", data=str(path)).setup("fit")


def test_kvasir_vqa_uncaptioned_images_are_counted(kvasir_vqa_hf, tmp_path):
    import json

    path, _, caps = kvasir_vqa_hf
    some = dict(list(caps.items())[:20])
    some["not-in-dataset"] = {"g": ["Generate an image containing a polyp."]}
    (tmp_path / "c.json").write_text(json.dumps(some))
    dm = KvasirVQADataModule(source="kvasir-vqa", data=str(path), captions=str(tmp_path / "c.json"),
                             on_bad_sample="skip", resolution=RES)
    dm.setup("fit")
    assert dm.report["skipped"] == {"no_caption": 4, "missing": 1}
    assert dm.report["train_images"] + dm.report["val_images"] == 20


def test_medvqa2024_hf_copy_groups_rows_by_image(medvqa_hf_parquet, kvasir_dir):
    path, n_images = medvqa_hf_parquet
    dm = KvasirVQADataModule(source="medvqa2024-hf", data=str(path), resolution=RES, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    recs = dm.train_dataset.records + dm.val_dataset.records
    assert len(recs) == n_images == 20 and dm.report["val_images"] == 4
    assert all(len(r.prompts) >= 3 for r in recs)  # rows of the same image grouped by content hash
    _check_batch(next(iter(dm.train_dataloader())), batch=4)


def test_hub_id_offline_names_the_fix():
    from msdm.hub import MissingWeightsError

    dm = KvasirVQADataModule(source="medvqa2024-hf", resolution=RES)  # default hub id, not cached here
    with pytest.raises(MissingWeightsError, match="--repo-type dataset"):
        dm.setup("fit")


def test_kvasir_vqa_from_an_imagefolder_copy(tmp_path, kvasir_dir):
    """A local imagefolder with metadata.jsonl (the hub columns) works too; its one split stands in for `raw`."""
    import json
    import os

    files = sorted((kvasir_dir / "images").glob("*.jpg"))[:6]
    with open(tmp_path / "metadata.jsonl", "w") as fh:
        for f in files:
            os.symlink(f, tmp_path / f.name)
            for q in ("Are there any polyps?", "What procedure?"):
                fh.write(json.dumps({"file_name": f.name, "img_id": f.stem, "question": q, "answer": "yes"}) + "\n")
    caps = tmp_path / "captions.json"
    caps.write_text(json.dumps({f.stem: {"g": ["Generate an image containing a polyp."]} for f in files}))
    dm = KvasirVQADataModule(source="kvasir-vqa", data=str(tmp_path), captions=str(caps), resolution=RES,
                             batch_size=5)
    with pytest.warns(UserWarning, match="only split"):
        dm.setup("fit")
    assert dm.report["train_images"] == 5 and dm.report["val_images"] == 1
    _check_batch(next(iter(dm.train_dataloader())), batch=5)


def test_ddp_sharding_keeps_the_epoch_and_splits_images(kvasir_devset):
    """What Lightning does under DDP: wrap the sampler in DistributedSamplerWrapper. Two ranks see disjoint images
    (up to DistributedSampler's padding) that together cover the training set, each with the caption of the current epoch."""
    from lightning.fabric.utilities.distributed import DistributedSamplerWrapper

    dm = _dm(kvasir_devset)
    ds, sampler = dm.train_dataset, dm.train_dataloader().sampler
    for epoch in (0, 3):
        seen = []
        for rank in (0, 1):
            w = DistributedSamplerWrapper(sampler, num_replicas=2, rank=rank, shuffle=True, seed=0)
            w.set_epoch(epoch)
            keys = list(w)
            assert all(e == epoch for _, e in keys)
            seen.append({i for i, _ in keys})
            item = ds[keys[0]]
            assert item["caption"] == ds.caption_for(keys[0][0], epoch)[0]
        # 135 images on 2 ranks: DistributedSampler pads one rank with one repeated index
        assert len(seen[0] & seen[1]) == len(ds) % 2 and len(seen[0] | seen[1]) == len(ds)


def test_medvqa2024_honours_image_and_caption_columns(kvasir_devset, tmp_path):
    """A copy of the 2024 layout whose table names its columns otherwise: the ColumnError says to set the columns,
    and setting them works."""
    import os

    from msdm.data.captions import ColumnError, read_table

    rows, _ = read_table(kvasir_devset / "prompt-gt.csv")
    os.symlink(kvasir_devset / "images", tmp_path / "images")
    (tmp_path / "prompt-gt.csv").write_text("text;file\n" + "".join(f"{r['Prompt']};{r['Filename']}\n" for r in rows))
    with pytest.raises(ColumnError, match="image_column"):
        _dm(tmp_path)
    dm = _dm(tmp_path, image_column="file", caption_column="text")
    assert dm.report["train_images"] + dm.report["val_images"] == 150
