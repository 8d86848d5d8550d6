"""msdm: medical text-to-image diffusion after *Prompt to Polyp* (Chaichuk et al., 2025).

The core (this package) is pure torch + diffusers and never imports Lightning at import time, so a notebook can
``from msdm.pipeline import MSDMPipeline`` with no Trainer in sight. Lightning shells live in the sibling packages
``lightning_modules`` and ``datamodules``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("msdm")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"

# diffusers' DiffusionPipeline.from_pretrained resolves a component class by (top-level library, class name):
# the model classes must be reachable as `msdm.<ClassName>`. Imported lazily so `import msdm` stays light.
_LAZY = {
    "MSDMVAE": "msdm.models.vae",
    "MSDMUNet": "msdm.models.unet",
    "MSDMPipeline": "msdm.pipeline",
}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'msdm' has no attribute {name!r}")


__all__ = ["__version__", *_LAZY]
