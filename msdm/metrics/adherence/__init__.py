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

# every public name of the parts, importable from here (each part lists them in its __all__)
from msdm.metrics.adherence import detector, metric, paired, vae_check
from msdm.metrics.adherence.detector import *  # noqa: F403
from msdm.metrics.adherence.metric import *  # noqa: F403
from msdm.metrics.adherence.paired import *  # noqa: F403
from msdm.metrics.adherence.vae_check import *  # noqa: F403
from msdm.synthetic.prompt_facts import parse_prompt
from msdm.synthetic.scene_detector import PixelThresholds, SceneDetector, as_image_batch

__all__ = [*detector.__all__, *metric.__all__, *paired.__all__, *vae_check.__all__, "parse_prompt", "PixelThresholds",
           "SceneDetector", "as_image_batch"]
