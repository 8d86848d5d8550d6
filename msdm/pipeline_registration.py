"""How diffusers finds :class:`~msdm.pipeline.MSDMPipeline` by name: ``DiffusionPipeline.from_pretrained(folder)``
looks the ``_class_name`` of ``model_index.json`` up in diffusers' namespace, ``AutoPipelineForText2Image`` in its
text-to-image table. Nothing of diffusers is replaced; a name is added only where it is free."""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys

_PIPELINE = []  # the registered class (the AutoPipeline hook adds it when diffusers' module is imported)


def register_with_diffusers(pipeline_cls) -> None:
    """Register ``pipeline_cls`` now with diffusers' namespace, and with the AutoPipeline table (now if that module
    is imported, else when it is)."""
    _PIPELINE[:] = [pipeline_cls]
    _register_namespace(pipeline_cls)
    if _AutoPipelineHook.NAME in sys.modules:
        _register_with_auto_pipeline(sys.modules[_AutoPipelineHook.NAME])
    elif not any(isinstance(f, _AutoPipelineHook) for f in sys.meta_path):
        sys.meta_path.insert(0, _AutoPipelineHook())


def _register_namespace(pipeline_cls) -> None:
    """Make ``diffusers.MSDMPipeline`` resolve, so ``DiffusionPipeline.from_pretrained(folder)`` loads an exported
    folder once msdm's pipeline is imported (diffusers loads the components only from modules already imported)."""
    import diffusers

    import msdm.models.unet  # noqa: F401 - the component classes model_index.json names
    import msdm.models.vae  # noqa: F401

    if getattr(diffusers, "_objects", None) is not None:  # diffusers' lazy module: looked up before the import map
        diffusers._objects.setdefault(pipeline_cls.__name__, pipeline_cls)
    if pipeline_cls.__name__ not in vars(diffusers):
        setattr(diffusers, pipeline_cls.__name__, pipeline_cls)


def _register_with_auto_pipeline(module) -> None:
    """``AutoPipelineForText2Image.from_pretrained(folder)`` finds its pipeline class by the ``_class_name`` of
    ``model_index.json`` in diffusers' text-to-image table: add MSDM's (only if the name is free)."""
    if not _PIPELINE:
        return
    pipeline_cls = _PIPELINE[0]
    table = module.AUTO_TEXT2IMAGE_PIPELINES_MAPPING
    if not any(cls.__name__ == pipeline_cls.__name__ for cls in table.values()):
        table["msdm"] = pipeline_cls


class _AutoPipelineHook(importlib.abc.MetaPathFinder):
    """Registers MSDM with diffusers' AutoPipeline table when that module is first imported: importing it here would
    load every diffusers pipeline class (seconds) for every msdm command, most of which never use it."""

    NAME = "diffusers.pipelines.auto_pipeline"

    def find_spec(self, name, path=None, target=None):
        if name != self.NAME:
            return None
        sys.meta_path.remove(self)  # let the other finders find the real module
        spec = importlib.util.find_spec(name)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module):
            run(module)
            _register_with_auto_pipeline(module)

        spec.loader.exec_module = exec_module
        return spec
