"""ImageTextDataModule (generic): folders with captions tables, HF datasets from local copies, and every bad-input
kind at the DataModule level (error naming file + fix under `raise`, exact counts under `skip`)."""

import io
import json
import os
import warnings

import numpy as np
import pytest
from PIL import Image

from datamodules.image_text import ImageTextDataModule
from msdm.data.captions import ColumnError
from msdm.data.images import BadImageError
from msdm.data.report import BadSampleError

RES = 32


@pytest.fixture(scope="module")
def kvasir_files(kvasir_dir):
    return sorted((kvasir_dir / "images").glob("*.jpg"))


def test_folder_with_jsonl_custom_columns(tmp_path, kvasir_files):
    for f in kvasir_files[:10]:
        os.symlink(f, tmp_path / f.name)
    with open(tmp_path / "captions.jsonl", "w") as fh:
        for f in kvasir_files[:10]:
            fh.write(json.dumps({"file": f.name, "text": ["Generate an image containing a polyp.",
                                                         f"A colonoscopy frame {f.stem[:4]}."]}) + "\n")
    dm = ImageTextDataModule(data=str(tmp_path), resolution=RES, batch_size=3, val_fraction=0.2)
    dm.setup("fit")  # columns guessed: file, text
    assert dm.report["train_images"] == 8 and dm.report["val_images"] == 2 and dm.report["val_items"] == 4
    b = next(iter(dm.train_dataloader()))
    assert b["pixel_values"].shape == (3, 3, RES, RES)
    with pytest.raises(ColumnError, match=r"Set caption_column"):
        ImageTextDataModule(data=str(tmp_path), caption_column="caption").setup("fit")


def test_table_file_with_images_elsewhere(tmp_path, kvasir_files, kvasir_dir):
    (tmp_path / "t.csv").write_text("path,prompt\n" + "".join(f"{f.name},Generate an image containing a polyp.\n"
                                                             for f in kvasir_files[:6]))
    dm = ImageTextDataModule(data=str(tmp_path / "t.csv"), images_dir=str(kvasir_dir / "images"), resolution=RES,
                             image_column="path", caption_column="prompt", channels=1, batch_size=2)
    dm.setup("fit")
    assert next(iter(dm.train_dataloader()))["pixel_values"].shape == (2, 1, RES, RES)


def test_hf_dataset_from_disk_with_official_validation_split(tmp_path, kvasir_files):
    from datasets import Dataset, DatasetDict, Features, Value
    from datasets import Image as HFImage

    feats = Features({"img": HFImage(), "text": Value("string"), "name": Value("string")})

    def part(files):
        return Dataset.from_dict({"img": [{"bytes": f.read_bytes(), "path": f.name} for f in files],
                                  "text": [f"caption {f.stem}" for f in files], "name": [f.stem for f in files]},
                                 features=feats)

    DatasetDict({"train": part(kvasir_files[:8]), "validation": part(kvasir_files[8:11])}).save_to_disk(str(tmp_path / "d"))
    dm = ImageTextDataModule(data=str(tmp_path / "d"), image_column="img", caption_column="text", id_column="name",
                             val_split="validation", resolution=RES, batch_size=4)
    dm.setup("fit")
    assert dm.report["train_images"] == 8 and dm.report["val_images"] == 3
    b = next(iter(dm.val_dataloader()))
    assert b["id"] == [f.stem for f in kvasir_files[8:11]] and b["caption"][0] == f"caption {kvasir_files[8].stem}"
    # the same data as one parquet file, seeded split instead
    part(kvasir_files[:8]).to_parquet(str(tmp_path / "one.parquet"))
    pq = ImageTextDataModule(data=str(tmp_path / "one.parquet"), image_column="img", caption_column="text",
                             id_column="name", resolution=RES, val_fraction=0.25)
    pq.setup("fit")
    assert pq.report["train_images"] == 6 and pq.report["val_images"] == 2
    with pytest.raises(KeyError, match="has no split 'dev2'"):
        ImageTextDataModule(data=str(tmp_path / "d"), image_column="img", caption_column="text",
                            val_split="dev2").setup("fit")


def test_imagefolder_metadata_jsonl(tmp_path, kvasir_files):
    for f in kvasir_files[:5]:
        os.symlink(f, tmp_path / f.name)
    (tmp_path / "metadata.jsonl").write_text("".join(json.dumps({"file_name": f.name, "text": "a polyp"}) + "\n"
                                                     for f in kvasir_files[:5]))
    dm = ImageTextDataModule(data=str(tmp_path), resolution=RES, val_fraction=0.0, batch_size=5)
    dm.setup("fit")
    assert dm.val_dataloader() == [] and len(next(iter(dm.train_dataloader()))["id"]) == 5


# --- bad inputs ---------------------------------------------------------------------------------------------------


def _png(img):
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def messy_folder(tmp_path_factory, kvasir_files):
    """6 good images, 4 odd-but-valid modes, and one of each bad kind."""
    d = tmp_path_factory.mktemp("messy")
    rows = []
    for f in kvasir_files[:6]:
        os.symlink(f, d / f.name)
        rows.append((f.name, "Generate an image containing a polyp."))
    rows.append((kvasir_files[0].name, ""))  # an empty caption row for a good image
    g = np.asarray(Image.open(kvasir_files[6]).convert("L"))
    (d / "gray.png").write_bytes(_png(Image.fromarray(g)))
    (d / "rgba.png").write_bytes(_png(Image.open(kvasir_files[7]).convert("RGBA")))
    (d / "deep16.png").write_bytes(_png(Image.fromarray(g.astype(np.uint16) * 257)))
    (d / "palette.png").write_bytes(_png(Image.open(kvasir_files[8]).convert("P")))
    rows += [(n, "Generate an image with no polyps.") for n in ("gray.png", "rgba.png", "deep16.png", "palette.png")]
    (d / "corrupt.jpg").write_bytes(b"this is not a jpeg" * 20)
    data = kvasir_files[9].read_bytes()
    (d / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (d / "tiny.png").write_bytes(_png(Image.new("RGB", (12, 12), (200, 50, 50))))
    os.symlink(kvasir_files[10], d / "nocaption.jpg")
    rows += [("corrupt.jpg", "x."), ("truncated.jpg", "x."), ("tiny.png", "x."), ("missing.jpg", "x."),
             ("nocaption.jpg", "")]
    with open(d / "captions.csv", "w") as fh:
        fh.write("image,caption\n" + "".join(f"{a},{b}\n" for a, b in rows))
    return d


def _messy(d, **kw):
    kw.setdefault("resolution", RES)
    kw.setdefault("val_fraction", 0.0)
    kw.setdefault("batch_size", 64)
    dm = ImageTextDataModule(data=str(d), **kw)
    dm.setup("fit")
    return dm


def test_raise_lists_every_bad_sample_with_the_fix(messy_folder):
    with pytest.raises(BadSampleError) as e:
        _messy(messy_folder)
    msg = str(e.value)
    for name in ("corrupt.jpg", "tiny.png", "missing.jpg", "nocaption", "empty_caption", "too_small"):
        assert name in msg
    assert "fix:" in msg and "on_bad_sample='skip'" in msg


def test_skip_counts_each_kind_and_converts_odd_modes(messy_folder):
    dm = _messy(messy_folder, on_bad_sample="skip", verify="full")
    assert dm.report["skipped"] == {"corrupt": 1, "truncated": 1, "too_small": 1, "missing": 1, "empty_caption": 2,
                                    "no_caption": 1}
    assert dm.report["train_images"] == 10  # 6 good + gray, RGBA, 16-bit, palette (converted, not skipped)
    b = next(iter(dm.train_dataloader()))
    assert b["pixel_values"].shape == (10, 3, RES, RES)
    assert {"gray", "rgba", "deep16", "palette"} <= set(b["id"])
    assert "6 bad samples skipped" not in dm.summary() and "7 bad samples skipped" in dm.summary()


def test_cut_short_files_are_found_by_the_header_check(messy_folder):
    dm = _messy(messy_folder, on_bad_sample="skip", verify="header")
    assert dm.report["skipped"]["truncated"] == 1 and dm.report["train_images"] == 10


def test_skip_decodes_at_setup_so_corrupt_scans_are_counted(tmp_path, kvasir_files):
    """A JPEG with damaged scan data passes the header check; under skip the default verification decodes, so it is
    counted in the report (not met mid-epoch); under raise a header check lets it through and loading names it."""
    from tests.test_data_images import corrupt_scan

    rows = []
    for f in kvasir_files[:4]:
        os.symlink(f, tmp_path / f.name)
        rows.append(f.name)
    (tmp_path / "scan.jpg").write_bytes(corrupt_scan(kvasir_files[4].read_bytes()))
    rows.append("scan.jpg")
    (tmp_path / "captions.csv").write_text("image,caption\n" + "".join(f"{r},a polyp.\n" for r in rows))
    dm = _messy(tmp_path, on_bad_sample="skip")
    assert dm.report["skipped"] == {"truncated": 1} or dm.report["skipped"] == {"corrupt": 1}
    assert dm.report["train_images"] == 4 and "scan.jpg" in dm.summary()
    dm = _messy(tmp_path)  # raise: header check only
    assert dm.report["train_images"] == 5
    with pytest.raises(BadImageError, match="scan.jpg"):
        list(dm.train_dataloader())
    # replaced under skip by the next image with a warning naming it, when met while loading (never silently)
    dm.train_dataset.on_bad_sample = "skip"
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        b = next(iter(dm.train_dataloader()))
    assert b["pixel_values"].shape[0] == 5 and any("scan.jpg" in str(x.message) for x in w)


def test_an_empty_validation_split_after_verification_warns(tmp_path, kvasir_files):
    good = kvasir_files[:3]
    for f in good:
        os.symlink(f, tmp_path / f.name)
    (tmp_path / "gone.jpg").write_bytes(b"not an image" * 10)
    (tmp_path / "captions.csv").write_text("image,caption\n" + "".join(f"{f.name},a polyp.\n" for f in good)
                                            + "gone.jpg,a polyp.\n")
    # a held-out quarter (one image) that is exactly the bad image: the first seed that draws it
    from msdm.data.splits import split_ids

    ids = [f.stem for f in good] + ["gone"]
    seed = next(s for s in range(100) if split_ids(ids, 0.25, s)[1] == ["gone"])
    with pytest.warns(UserWarning, match="validation split is empty after verification"):
        dm = _messy(tmp_path, on_bad_sample="skip", val_fraction=0.25, seed=seed)
    assert dm.val_dataloader() == [] and dm.report["train_images"] == 3


def test_folder_with_images_subfolder(tmp_path, kvasir_files):
    (tmp_path / "images").mkdir()
    for f in kvasir_files[:5]:
        os.symlink(f, tmp_path / "images" / f.name)
    (tmp_path / "captions.csv").write_text("image,caption\n" + "".join(f"{f.name},a polyp.\n" for f in kvasir_files[:5]))
    dm = ImageTextDataModule(data=str(tmp_path) + "/", resolution=RES, val_fraction=0.2, batch_size=4)
    dm.setup("fit")
    assert dm.report["train_images"] == 4 and dm.report["skipped_total"] == 0
    assert next(iter(dm.train_dataloader()))["pixel_values"].shape == (4, 3, RES, RES)


def test_non_utf8_captions_table_names_the_file_and_the_encoding_option(tmp_path, kvasir_files):
    from msdm.errors import InputError

    for f in kvasir_files[:4]:
        os.symlink(f, tmp_path / f.name)
    text = "image,caption\n" + "".join(f"{f.name},Läsion größer als 5 mm.\n" for f in kvasir_files[:4])
    (tmp_path / "captions.csv").write_bytes(text.encode("cp1252"))
    with pytest.raises(InputError) as e:
        ImageTextDataModule(data=str(tmp_path), resolution=RES).setup("fit")
    msg = str(e.value)
    assert "captions.csv" in msg and "captions_encoding" in msg and len(msg.splitlines()) == 1
    dm = ImageTextDataModule(data=str(tmp_path), resolution=RES, val_fraction=0.0, captions_encoding="cp1252")
    dm.setup("fit")
    assert dm.train_dataset.records[0].prompts == ["Läsion größer als 5 mm."]


def test_a_mistyped_relative_data_path_is_not_a_hub_id(tmp_path, monkeypatch):
    from msdm.hub import MissingWeightsError

    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    for typo in ("data/kvasri", "./kvasir", "captions.csv"):
        with pytest.raises(MissingWeightsError) as e:
            ImageTextDataModule(data=typo).setup("fit")
        msg = str(e.value)
        assert "folder not found" in msg and str(tmp_path) in msg and "huggingface-cli" not in msg, msg
