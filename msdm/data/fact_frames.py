"""Deprecated alias: this module moved to :mod:`msdm.facts.dataset` (the frames and their facts live together)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.facts.dataset")
