"""Deprecated alias: this module moved to :mod:`msdm.synthetic.prompt_scenes` (the house refactor, issue 22)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.synthetic.prompt_scenes")
