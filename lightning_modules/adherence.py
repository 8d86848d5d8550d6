"""Deprecated alias: this module moved to :mod:`lightning_modules.callbacks.adherence` (the house refactor, issue 22)."""

from msdm._compat import alias_module

alias_module(__name__, "lightning_modules.callbacks.adherence")
