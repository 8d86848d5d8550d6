"""Downstream utility: does synthetic data help a classifier? (``msdm utility``, docs/utility.md)

Prompt to Polyp §6.2 names downstream classification performance as the way to judge the clinical relevance of
generated images. This package holds the pure parts of that experiment (no Lightning):

* :mod:`~msdm.utility.class_prompts` — which prompts make images of which class (or label set);
* :mod:`~msdm.utility.data` — real labelled sets (class folders, tables, HF datasets) and generated pools, decoded
  once;
* :mod:`~msdm.utility.generators` — generators (MSDM pipeline via ``msdm generate``, LoRA folders, generated
  folders, the synthetic-scene renderer) writing the challenge layout with provenance;
* :mod:`~msdm.utility.plan` — arms × real fractions × seeds and the samples each run sees;
* :mod:`~msdm.utility.mixing` — the mixed real + synthetic dataset;
* :mod:`~msdm.utility.networks` — the classifiers (small CNN, ResNet-18);
* :mod:`~msdm.utility.metrics`, :mod:`~msdm.utility.stats`, :mod:`~msdm.utility.report` — metrics, intervals,
  tables and plots;
* :mod:`~msdm.utility.synthetic_task` — the synthetic task with known labels and perfect / contradicting renders.

The classifier (``lightning_modules.classifier.ClassifierModule``) and the data module
(``datamodules.utility.UtilityDataModule``) are the Lightning shells; ``msdm/commands/utility.py`` wires them.
"""
