"""LightningDataModules: generic image+caption folders and HF datasets, Kvasir-VQA / MEDVQA-GI, ROCOv2, synthetic,
image + mask folders with true-fact captions (FactCaptionDataModule);
and the prompts of ``msdm predict`` (PromptDataModule).

Every DataModule yields ``{"pixel_values", "caption", "id"}`` batches (docs/CONVENTIONS.md). Import them from here
(``from datamodules import KvasirVQADataModule``) or name them in YAML (``class_path: datamodules.KvasirVQADataModule``).
"""

from datamodules.fact_captions import FactCaptionDataModule
from datamodules.image_text import ImageTextDataModule
from datamodules.kvasir import KvasirVQADataModule
from datamodules.prompts import PromptDataModule
from datamodules.rocov2 import ROCOv2DataModule
from datamodules.synthetic import SyntheticGIDataModule
from datamodules.utility import UtilityDataModule

__all__ = ["FactCaptionDataModule", "ImageTextDataModule", "KvasirVQADataModule", "PromptDataModule", "ROCOv2DataModule",
           "SyntheticGIDataModule", "UtilityDataModule"]
