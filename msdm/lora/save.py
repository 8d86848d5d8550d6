"""Writing LoRA files that stock diffusers loads, atomically.

Two formats, each the one its pipeline family reads:

- **Kandinsky 2.2** (prior and decoder): the model-level ``save_lora_adapter`` file (peft keys without a prefix,
  the LoraConfig in the safetensors header under ``lora_adapter_metadata``). Kandinsky pipelines have no
  ``load_lora_weights``; users load with the model-level method::

      pipe.prior.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix=None)   # prior
      pipe.unet.load_lora_adapter(DIR, weight_name="pytorch_lora_weights.safetensors", prefix=None)    # decoder

  (``prefix=None`` because the default prefix ``"transformer"`` would filter every key out.)
- **FLUX**: ``FluxPipeline.save_lora_weights`` (keys prefixed ``transformer.``, LoraConfig metadata), loaded by
  ``pipe.load_lora_weights(DIR)``.

Both go through :func:`msdm.io.atomic_directory`: an interrupted save leaves the previous folder, never a half one.
A small ``msdm_lora.json`` next to the weights records what the adapter was trained on (provenance only; the
loaders ignore it).
"""

from __future__ import annotations

import os
from pathlib import Path

from msdm.io import atomic_directory, write_json

LORA_WEIGHT_NAME = "pytorch_lora_weights.safetensors"


def save_model_lora(model, directory: str | os.PathLike, info: dict | None = None,
                    weight_name: str = LORA_WEIGHT_NAME, adapter_name: str = "default") -> Path:
    """Save the adapter of a diffusers model (PriorTransformer, UNet2DConditionModel, ...) with ``save_lora_adapter``.

    The LoRA weights are written in float32 whatever the base dtype (they train in fp32).
    """
    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        # save_lora_adapter(upcast_before_saving=True) would cast the whole base model; the LoRA weights already
        # are fp32, so save as they are.
        model.save_lora_adapter(str(tmp), adapter_name=adapter_name, weight_name=weight_name, safe_serialization=True)
        write_json(tmp / "msdm_lora.json", {"format": "diffusers-model-lora", "weight_name": weight_name,
                                            "model_class": type(model).__name__, **(info or {})})
    return directory


def save_flux_lora(transformer, directory: str | os.PathLike, info: dict | None = None,
                   weight_name: str = LORA_WEIGHT_NAME, adapter_name: str = "default") -> Path:
    """Save a FLUX transformer's adapter with ``FluxPipeline.save_lora_weights`` (+ LoraConfig metadata)."""
    from diffusers import FluxPipeline

    from msdm.lora.adapters import lora_metadata, lora_state_dict

    directory = Path(directory)
    with atomic_directory(directory) as tmp:
        FluxPipeline.save_lora_weights(
            save_directory=str(tmp),
            transformer_lora_layers=lora_state_dict(transformer, adapter_name),
            transformer_lora_adapter_metadata=lora_metadata(transformer, adapter_name),
            weight_name=weight_name,
            safe_serialization=True,
        )
        write_json(tmp / "msdm_lora.json", {"format": "diffusers-flux-lora", "weight_name": weight_name,
                                            "model_class": type(transformer).__name__, **(info or {})})
    return directory


def load_model_lora(model, directory: str | os.PathLike, weight_name: str = LORA_WEIGHT_NAME,
                    adapter_name: str | None = None):
    """Load a :func:`save_model_lora` folder into ``model`` — the same call a user types (see module doc)."""
    kwargs = {"adapter_name": adapter_name} if adapter_name else {}
    model.load_lora_adapter(str(directory), weight_name=weight_name, prefix=None, local_files_only=True, **kwargs)
    return model
