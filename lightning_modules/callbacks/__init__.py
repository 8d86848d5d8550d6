"""Lightning callbacks, one file per concern:

* :mod:`~lightning_modules.callbacks.realism` — :class:`GenerationMetrics` (FID, FBD, the challenge's scores);
* :mod:`~lightning_modules.callbacks.memorization` — :class:`MemorizationCallback` (copies of training frames);
* :mod:`~lightning_modules.callbacks.adherence` — :class:`AdherenceCallback`, :class:`VAECheck`,
  :class:`ConditioningDiagnostic`;
* :mod:`~lightning_modules.callbacks.images` — :class:`SampleGrid`;
* :mod:`~lightning_modules.callbacks.checkpointing` — :class:`ResumableCheckpoint`;
* :mod:`~lightning_modules.callbacks.prediction` — :class:`ChallengeImageWriter` (``msdm predict``);
* :mod:`~lightning_modules.callbacks.cache` — :class:`FrozenOutputCache` (stage 2's latent + text cache).

They generate through the generator contract (:mod:`msdm.generators`) and compute with :mod:`msdm.metrics`; a new
metric's callback goes next to its concern's.
"""

from lightning_modules.callbacks.adherence import AdherenceCallback, ConditioningDiagnostic, VAECheck
from lightning_modules.callbacks.cache import FrozenOutputCache
from lightning_modules.callbacks.checkpointing import ResumableCheckpoint
from lightning_modules.callbacks.images import FAST_DEV_RUN_STEPS, SampleGrid
from lightning_modules.callbacks.memorization import MemorizationCallback
from lightning_modules.callbacks.prediction import ChallengeImageWriter
from lightning_modules.callbacks.realism import GenerationMetrics

__all__ = ["FAST_DEV_RUN_STEPS", "AdherenceCallback", "ChallengeImageWriter", "ConditioningDiagnostic",
           "FrozenOutputCache", "GenerationMetrics", "MemorizationCallback", "ResumableCheckpoint", "SampleGrid", "VAECheck"]
