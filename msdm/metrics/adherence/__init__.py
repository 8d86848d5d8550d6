"""Prompt adherence: does a generated image show what its prompt asks for?

The entry point (every name below is importable from here), used by notebooks, the callbacks
(:mod:`lightning_modules.callbacks.adherence`), ``msdm evaluate --adherence``, the quickstart and
``bench/adherence.py``:

* :mod:`~msdm.metrics.adherence.detector` — what a detector must offer (images → facts in the prompt grammar's
  vocabulary); the synthetic scenes' :class:`~msdm.synthetic.scene_detector.SceneDetector` is the default, a
  detector for real frames plugs in as ``detector=``;
* :mod:`~msdm.metrics.adherence.metric` — :func:`judge` one image against its prompt, :class:`AdherenceMetric`
  (torchmetrics, summed DDP-safe states), :func:`evaluate_adherence_folder` for a generated folder;
* :mod:`~msdm.metrics.adherence.paired` — paired mode (a prompt and its negation with the same seeds) and
  :func:`adherence_report` (paired mode + the metric from one generation pass), over any generator of
  :mod:`msdm.generators`;
* :mod:`~msdm.metrics.adherence.vae_check` — does a first stage keep what the prompts name (:func:`detector_agreement`);
* :mod:`~msdm.metrics.adherence.conditioning` — how much the prompt moves the U-Net's prediction while training.
"""

from msdm.metrics.adherence.detector import Detector, default_detector
from msdm.metrics.adherence.metric import (
    ATTRIBUTES,
    FACT_OF,
    PAIRED_ATTRIBUTES,
    AdherenceMetric,
    evaluate_adherence_folder,
    format_accuracy,
    judge,
    read_generated_prompts,
)
from msdm.metrics.adherence.paired import (
    DEFAULT_PAIRS,
    DEFAULT_PROMPTS,
    GenerateFn,
    adherence_report,
    check_pairs,
    format_paired,
    module_generate_fn,
    pair_counts,
    paired_adherence,
    paired_result,
    pipeline_generate_fn,
)
from msdm.metrics.adherence.vae_check import detector_agreement, vae_reconstruct
from msdm.synthetic.prompt_facts import parse_prompt
from msdm.synthetic.scene_detector import PixelThresholds, SceneDetector, as_image_batch

__all__ = [
    "ATTRIBUTES", "DEFAULT_PAIRS", "DEFAULT_PROMPTS", "FACT_OF", "PAIRED_ATTRIBUTES", "AdherenceMetric", "Detector",
    "GenerateFn", "PixelThresholds", "SceneDetector", "adherence_report", "as_image_batch", "check_pairs",
    "default_detector", "detector_agreement", "evaluate_adherence_folder", "format_accuracy", "format_paired",
    "judge", "module_generate_fn", "pair_counts", "paired_adherence", "paired_result", "parse_prompt",
    "pipeline_generate_fn", "read_generated_prompts", "vae_reconstruct",
]
