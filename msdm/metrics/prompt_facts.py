"""Deprecated alias: the prompt grammar lives in :mod:`msdm.facts.grammar` (the house refactor, issue 22, moved this
module to ``msdm.synthetic.prompt_facts``; issue 20 made ``msdm/facts`` the one prompt grammar)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.facts.grammar")
