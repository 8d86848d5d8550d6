"""The dtype names msdm accepts, in one table (configs, commands, modules): ``float32``/``fp32``, ``bfloat16``/``bf16``,
``float16``/``fp16``."""

from __future__ import annotations

import torch

DTYPES: dict[str, torch.dtype] = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
                                  "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}
#: the short spellings commands offer (``--dtype``)
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def parse_dtype(name: str | torch.dtype | None) -> torch.dtype | None:
    """``torch.dtype`` of a name (case-insensitive); a dtype passes through; ``None`` stays ``None`` (as stored)."""
    if name is None or isinstance(name, torch.dtype):
        return name
    try:
        return DTYPES[str(name).lower()]
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)}") from None
