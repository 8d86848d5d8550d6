"""The dtype names msdm accepts, in one table (configs, commands, modules): ``float32``/``fp32``, ``bfloat16``/``bf16``,
``float16``/``fp16``.

torch is imported on first use (:data:`DTYPES`, :func:`parse_dtype`), not with the module: every command's ``--dtype``
choices come from here and ``msdm --help`` must start without torch (issue 23)."""

from __future__ import annotations

#: name → the ``torch`` attribute it means
_NAMES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16", "float16": "float16",
          "fp16": "float16"}
#: the short spellings commands offer (``--dtype``)
DTYPE_CHOICES = ("fp32", "bf16", "fp16")


def __getattr__(name: str):
    if name == "DTYPES":  # {name: torch.dtype}, built (with torch) when first asked for
        import torch

        return {k: getattr(torch, v) for k, v in _NAMES.items()}
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def parse_dtype(name):
    """``torch.dtype`` of a name (case-insensitive); a dtype passes through; ``None`` stays ``None`` (as stored)."""
    import torch

    if name is None or isinstance(name, torch.dtype):
        return name
    try:
        return getattr(torch, _NAMES[str(name).lower()])
    except KeyError:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(_NAMES)}") from None
