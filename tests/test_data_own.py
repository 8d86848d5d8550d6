"""Your own data in the usual loop: a ``datasets.Dataset`` built in memory is accepted as it is, a saved one has
its image and text columns guessed as the docs say, and the configs/ examples for your own folder and your own
HF dataset build and give batches."""

from pathlib import Path

import pytest
import torch
import yaml

from datamodules.image_text import ImageTextDataModule
from msdm.data.captions import ColumnError

RES = 32
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def kvasir_files(kvasir_dir):
    return sorted((kvasir_dir / "images").glob("*.jpg"))[:10]


def _dataset(files, image="image", text="text"):
    from datasets import Dataset, Features, Value
    from datasets import Image as HFImage

    return Dataset.from_dict({image: [{"bytes": f.read_bytes(), "path": f.name} for f in files],
                              text: [f"A colonoscopy frame {f.stem[:6]}." for f in files]},
                             features=Features({image: HFImage(), text: Value("string")}))


def test_an_in_memory_dataset_is_accepted(kvasir_files):
    ds = _dataset(kvasir_files)
    dm = ImageTextDataModule(data=ds, resolution=RES, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    assert dm.report["train_images"] == 8 and dm.report["val_images"] == 2
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (4, 3, RES, RES) and batch["caption"][0].startswith("A colonoscopy frame")
    assert -1 <= batch["pixel_values"].min() and batch["pixel_values"].max() <= 1
    # not stored in the hyper-parameters (a checkpoint must not pickle the data)
    assert isinstance(dm.hparams["data"], str) and "in-memory Dataset (10 rows" in dm.hparams["data"]
    # a DatasetDict with its own validation split
    from datasets import DatasetDict

    dd = DatasetDict({"train": _dataset(kvasir_files[:7]), "validation": _dataset(kvasir_files[7:])})
    dm = ImageTextDataModule(data=dd, val_split="validation", resolution=RES, batch_size=2)
    dm.setup("fit")
    assert dm.report["train_images"] == 7 and dm.report["val_images"] == 3


@pytest.mark.parametrize("image, text", [("image", "text"), ("img", "caption"), ("picture", "prompt")])
def test_a_saved_dataset_has_its_columns_guessed(tmp_path, kvasir_files, image, text):
    _dataset(kvasir_files, image, text).save_to_disk(str(tmp_path / "d"))
    dm = ImageTextDataModule(data=str(tmp_path / "d"), resolution=RES, batch_size=2, val_fraction=0.2)
    dm.setup("fit")  # the Image-typed column is the image; caption / text / prompt is the text
    assert dm.report["train_images"] == 8
    assert next(iter(dm.train_dataloader()))["caption"][0].startswith("A colonoscopy frame")


def test_an_unguessable_text_column_names_the_columns(tmp_path, kvasir_files):
    _dataset(kvasir_files, "image", "findings").save_to_disk(str(tmp_path / "d"))
    with pytest.raises(ColumnError, match=r"\['image', 'findings'\]. Set caption_column"):
        ImageTextDataModule(data=str(tmp_path / "d"), resolution=RES).setup("fit")


@pytest.mark.parametrize("config", ["own_folder_unet.yaml", "own_hf_dataset_unet.yaml"])
def test_the_own_data_configs_point_at_the_generic_datamodule(config):
    cfg = yaml.safe_load((ROOT / "configs" / config).read_text())
    assert cfg["data"]["class_path"] == "datamodules.image_text.ImageTextDataModule"
    callbacks = [c["class_path"] for c in cfg["trainer"]["callbacks"]]
    # no synthetic-scene detectors on real frames (the quickstart's AdherenceCallback / VAECheck)
    assert not any(c.endswith(("AdherenceCallback", "VAECheck")) for c in callbacks)


def test_the_own_folder_config_trains_on_a_folder(tmp_path, kvasir_files):
    """configs/own_folder_unet.yaml's data section as given, pointed at a folder of images + captions.csv."""
    import os

    for f in kvasir_files:
        os.symlink(f, tmp_path / f.name)
    (tmp_path / "captions.csv").write_text("file_name,caption\n" + "".join(
        f"{f.name},Generate an image containing a polyp.\n" for f in kvasir_files))
    data = yaml.safe_load((ROOT / "configs" / "own_folder_unet.yaml").read_text())["data"]["init_args"]
    data.update(data=str(tmp_path), resolution=RES, batch_size=2, num_workers=0)
    dm = ImageTextDataModule(**data)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["pixel_values"].shape == (2, 3, RES, RES) and torch.isfinite(batch["pixel_values"]).all()
