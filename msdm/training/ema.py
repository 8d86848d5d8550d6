"""Exponential moving average of trainable weights (diffusers' ``EMAModel``), for the generator modules and any loop.

The average is updated after each optimizer step with one in-place ``torch._foreach_lerp_`` over all tensors
(``shadow += (1 − decay)·(param − shadow)``): no temporary copy of the weights, where diffusers' foreach path
allocates one (1.3 GB for the paper U-Net; several times slower on a CPU, docs/benchmarks.md). Decay schedule,
state dict and swapping come from diffusers' ``EMAModel``. The average lives on the module's device, is saved in the
checkpoint under ``"ema"`` and is swapped in for validation sampling and export.
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
        ema = self.ema
        if ema.shadow_params[0].device != self.parameters[0].device:
            ema.to(self.parameters[0].device)
        # EMAModel.step's bookkeeping, then the update in place (all parameters here require grad)
        ema.optimization_step += 1
        decay = ema.get_decay(ema.optimization_step)
        ema.cur_decay_value = decay
        torch._foreach_lerp_(ema.shadow_params, self.parameters, 1.0 - decay)

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
