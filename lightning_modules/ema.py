"""Exponential moving average of trainable weights for the generator modules (diffusers' ``EMAModel``).

The average is updated after each optimizer step with foreach kernels (one fused op per parameter group instead of
one per tensor), lives on the module's device, is saved in the checkpoint under ``"ema"`` and is swapped in for
validation sampling and export.
"""

from __future__ import annotations

import contextlib

import torch
from diffusers.training_utils import EMAModel


class EMA:
    def __init__(self, parameters, decay: float = 0.9999, update_after_step: int = 0):
        self.parameters = [p for p in parameters if p.requires_grad]
        self.ema = EMAModel(self.parameters, decay=decay, update_after_step=update_after_step, foreach=True)

    @torch.no_grad()
    def update(self) -> None:
        if self.ema.shadow_params[0].device != self.parameters[0].device:
            self.ema.to(self.parameters[0].device)
        self.ema.step(self.parameters)

    @contextlib.contextmanager
    def swapped_in(self):
        """Temporarily load the averaged weights into the live parameters."""
        self.ema.store(self.parameters)
        self.ema.copy_to(self.parameters)
        try:
            yield
        finally:
            self.ema.restore(self.parameters)

    def state_dict(self) -> dict:
        return self.ema.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.ema.load_state_dict(state)
