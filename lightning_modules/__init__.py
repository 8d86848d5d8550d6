"""Thin Lightning shells around the msdm core: one LightningModule per generator, plus callbacks.

Import the classes from here (``from lightning_modules import MSDMUNetModule``) or by their module path in YAML
configs (``class_path: lightning_modules.MSDMUNetModule``).
"""

from lightning_modules.callbacks import (
    AdherenceCallback,
    ChallengeImageWriter,
    ConditioningDiagnostic,
    FrozenOutputCache,
    GenerationMetrics,
    MemorizationCallback,
    ResumableCheckpoint,
    SampleGrid,
    VAECheck,
)
from lightning_modules.classifier import ClassifierModule
from lightning_modules.flux_lora import FluxLoRAModule
from lightning_modules.kandinsky_lora import KandinskyLoRAModule
from lightning_modules.unet_module import MSDMUNetModule
from lightning_modules.vae_module import MSDMVAEModule

__all__ = ["MSDMVAEModule", "MSDMUNetModule", "KandinskyLoRAModule", "FluxLoRAModule", "SampleGrid", "GenerationMetrics",
           "AdherenceCallback", "VAECheck", "ConditioningDiagnostic", "ResumableCheckpoint", "ChallengeImageWriter",
           "ClassifierModule", "FrozenOutputCache", "MemorizationCallback"]
