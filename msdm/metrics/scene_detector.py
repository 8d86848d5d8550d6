"""Deprecated alias: this module moved to :mod:`msdm.synthetic.scene_detector` (the house refactor, issue 22)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.synthetic.scene_detector")
