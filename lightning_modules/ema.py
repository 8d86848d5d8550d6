"""Deprecated alias: the EMA moved to :mod:`msdm.training.ema` (pure torch; the house refactor, issue 22)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.training.ema")
