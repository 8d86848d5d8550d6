"""The in-place EMA update equals diffusers' EMAModel.step (decay schedule included)."""

import torch
from diffusers.training_utils import EMAModel

from msdm.training.ema import EMA


def test_lerp_update_matches_diffusers():
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(5, 3)), torch.nn.Parameter(torch.randn(7))]
    ours = EMA(params, decay=0.9, update_after_step=1)
    ref = EMAModel([p.detach().clone() for p in params], decay=0.9, update_after_step=1, foreach=False)
    for _ in range(4):
        with torch.no_grad():
            for p in params:
                p.add_(torch.randn_like(p))
        ours.update()
        ref.step(params)
        assert ours.ema.optimization_step == ref.optimization_step
        assert ours.ema.cur_decay_value == ref.cur_decay_value
        for a, b in zip(ours.ema.shadow_params, ref.shadow_params):
            torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6)
    with ours.swapped_in():
        torch.testing.assert_close(params[0].detach(), ref.shadow_params[0])
