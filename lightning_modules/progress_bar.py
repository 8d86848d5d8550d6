"""The Trainer's progress bar for msdm runs: Lightning's tqdm bar without the logger-version entry.

Lightning's bar adds ``v_num`` (the logger's version) to the metrics it shows — ``v_num: 0.000`` next to the loss on
every step of every run, which says nothing about training. ``msdm fit`` (and the quickstart) use this bar instead;
it shows the module's ``prog_bar`` metrics (``train/loss``, ``val/loss``, …) and nothing else.
"""

from __future__ import annotations

from lightning.pytorch.callbacks import TQDMProgressBar


class MSDMProgressBar(TQDMProgressBar):
    """``TQDMProgressBar`` minus ``v_num`` (module docstring)."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items
