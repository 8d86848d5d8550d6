"""Deprecated alias: this module moved to :mod:`msdm.metrics.adherence.real_detector` (next to the adherence metric)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.metrics.adherence.real_detector")
