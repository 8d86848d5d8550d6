"""``msdm predict``: the ``predict_step`` of every generator module.

Batches come from :class:`datamodules.prompts.PromptDataModule`: one item per image, with its prompt, indices and
seed (``image_seed + k``). :func:`predict_step` asks the module for exactly those images
(``generate_with_seeds(prompts, seeds)``), so an image does not depend on the batch or the rank that made it; the
:class:`~lightning_modules.callbacks.prediction.ChallengeImageWriter` callback writes them.
"""

from __future__ import annotations

__all__ = ["predict_step"]


def predict_step(module, batch: dict) -> dict:
    """``{**batch, "images": float [B, 3, H, W] in [0, 1]}`` for a PromptDataModule batch."""
    if "prompt" not in batch or "seed" not in batch:
        raise ValueError(f"{type(module).__name__}.predict_step generates images from prompts: use "
                         "--data PromptDataModule --data.prompts FILE (datamodules/prompts.py)")
    images = module.generate_with_seeds(list(batch["prompt"]), [int(s) for s in batch["seed"]])
    return {**batch, "images": images}


def __getattr__(name):  # the writer moved next to the other callbacks; kept importable from here
    if name in ("ChallengeImageWriter", "SEED_RULE"):
        from lightning_modules.callbacks import prediction

        return getattr(prediction, name)
    raise AttributeError(f"module 'lightning_modules.prediction' has no attribute {name!r}")
