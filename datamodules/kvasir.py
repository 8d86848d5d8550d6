"""``KvasirVQADataModule``: colonoscopy images with MEDVQA-GI prompts, from three sources behind one class.

``source=``

* ``"medvqa2024"`` — the ImageCLEFmed MEDVQA-GI 2024 development layout: a folder with ``prompt-gt.csv``
  (semicolon separated, columns ``Prompt;Filename``, about 10 rows per image) and ``images/``. This is what the
  Prompt to Polyp reference code reads (``src/dataset.py``: ``pd.read_csv(..., delimiter=';')``).
* ``"kvasir-vqa"`` — the Hugging Face dataset ``SimulaMet-HOST/Kvasir-VQA`` (split ``raw``; columns ``image``,
  ``img_id``, ``question``, ``answer``, ...; one row per question, so each image appears many times) with captions
  from ``captions=``: the 2025 challenge captions file ``{img_id: {group: [caption, ...]}}`` or a CSV/JSONL with
  ``img_id`` and ``caption``.
* ``"medvqa2024-hf"`` — the Hugging Face copy of the 2024 development set
  (``SushantGautam/ImageCLEFmed-MEDVQA-GI-2024-Dev_mod``; columns ``caption``, ``type``, ``image``, one row per
  prompt). It has no image id column: rows are grouped by a hash of the image bytes (ids are file stems where the
  rows carry unique file names).

``data=`` is the folder (``medvqa2024``), or a hub id / local copy of the HF dataset (``save_to_disk`` folder,
parquet files, or an imagefolder with ``metadata.jsonl``) with the same columns. The validation split is the paper's:
a seeded 10 % of the *images*, each with all its prompts; validation and test score the original prompts.
Aspect: centre crop (the reference's ``CenterCrop(min(image.size))``), random crop offset at training only where the
prompts allow it (``augment="prompt_aware"``).
"""

from __future__ import annotations

from pathlib import Path

from msdm.data.captions import read_challenge_captions
from msdm.data.dataset import ImageSource
from msdm.data.hf import load_hf, select_split
from msdm.data.report import SkipReport
from msdm.data.sources import records_from_hf, records_from_table
from msdm.errors import PathNotFoundError

from .image_text import ImageTextDataModule, Splits

SOURCES = ("medvqa2024", "kvasir-vqa", "medvqa2024-hf")
DEFAULT_DATA = {
    "kvasir-vqa": "SimulaMet-HOST/Kvasir-VQA",
    "medvqa2024-hf": "SushantGautam/ImageCLEFmed-MEDVQA-GI-2024-Dev_mod",
}
DEFAULT_SPLIT = {"kvasir-vqa": "raw", "medvqa2024-hf": "train"}
CAPTIONS_HINT = (
    "source='kvasir-vqa' needs captions=: the 2025 challenge captions file kvasir-captions.json "
    "({img_id: {group: [caption, ...]}}, github.com/simula/ImageCLEFmed-MEDVQA-GI-2025) or a CSV/JSONL with the "
    "columns img_id and caption"
)


class KvasirVQADataModule(ImageTextDataModule):
    """Kvasir-VQA / MEDVQA-GI colonoscopy images and prompts (see the module docstring for ``source``).

    Args (beyond :class:`~datamodules.image_text.ImageTextDataModule`):
        source: ``medvqa2024`` | ``kvasir-vqa`` | ``medvqa2024-hf``.
        data: folder (``medvqa2024``) or HF hub id / local copy (default: the source's hub id).
        captions: captions for ``kvasir-vqa`` (2025 JSON or CSV/JSONL ``img_id,caption``).
        prompt_file / images_dir: names inside the ``medvqa2024`` folder.
        split: HF split (default ``raw`` for Kvasir-VQA, ``train`` for the dev-set copy).
        image_column / caption_column: default ``Filename`` / ``Prompt`` for ``medvqa2024`` (the columns of
            ``prompt-gt.csv``), ``image`` / ``caption`` for the HF sources; set them when a copy names them otherwise.
        captions_encoding: text encoding of ``prompt-gt.csv`` (default UTF-8).
        **kwargs: the other options of :class:`~datamodules.image_text.ImageTextDataModule` (``resolution``,
            ``batch_size``, ``paraphrase_strategy``, ``id_column``, ``val_fraction``, ...).
    """

    FILLED = ("captions_file", "val_split", "test_split")

    def __init__(
        self,
        source: str = "medvqa2024",
        data: str | None = None,
        captions: str | None = None,
        prompt_file: str = "prompt-gt.csv",
        images_dir: str = "images",
        split: str | None = None,
        image_column: str | None = None,
        caption_column: str | None = None,
        **kwargs,
    ):
        if source not in SOURCES:
            raise ValueError(f"source must be one of {SOURCES}, got {source!r}")
        if source == "medvqa2024" and data is None:
            raise ValueError("source='medvqa2024' needs data= the folder with prompt-gt.csv and images/")
        table_source = source == "medvqa2024"
        super().__init__(
            data=data or DEFAULT_DATA.get(source), captions_file=None, images_dir=images_dir,
            image_column=image_column or ("Filename" if table_source else "image"),
            caption_column=caption_column or ("Prompt" if table_source else "caption"),
            split=split or DEFAULT_SPLIT.get(source, "train"), val_split=None, test_split=None, **kwargs,
        )
        self.source = source
        self.cfg.source, self.cfg.captions, self.cfg.prompt_file = source, captions, prompt_file

    def _is_table_source(self):
        return None  # the sources below decide

    def prepare_data(self) -> None:
        if self.source != "medvqa2024" and not Path(str(self.cfg.data)).expanduser().exists():
            load_hf(self.cfg.data)

    def load_splits(self, report: SkipReport) -> Splits:
        h = self.cfg
        if self.source == "medvqa2024":
            folder = Path(h.data).expanduser()
            table = folder / h.prompt_file
            if not table.is_file():
                raise PathNotFoundError(
                    f"{table} not found: source='medvqa2024' expects the MEDVQA-GI 2024 development layout "
                    f"({h.prompt_file} with columns Prompt;Filename and an {h.images_dir}/ folder) in {folder}", table
                )
            recs = records_from_table(table, folder / h.images_dir, report, image_column=h.image_column,
                                      caption_column=h.caption_column, id_column=h.id_column,
                                      encoding=h.captions_encoding)
            return {"train": (recs, ImageSource())}
        ds = select_split(load_hf(h.data), h.split, str(h.data), only_split_ok=True)
        if self.source == "kvasir-vqa":
            if not h.captions:
                raise ValueError(CAPTIONS_HINT)
            caps = read_challenge_captions(h.captions)
            recs = records_from_hf(ds, report, h.image_column, h.caption_column, h.id_column or "img_id",
                                   captions=caps, where=f"{h.data} [{h.split}]")
        else:
            recs = records_from_hf(ds, report, h.image_column, h.caption_column, h.id_column,
                                   where=f"{h.data} [{h.split}]")
        return {"train": (recs, ImageSource(ds, h.image_column))}
