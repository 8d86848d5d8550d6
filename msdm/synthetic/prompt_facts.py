"""Deprecated alias: the prompt grammar lives in :mod:`msdm.facts.grammar` (one fact vocabulary and one prompt grammar
for captions, paraphrase checks and adherence scoring, on synthetic scenes and real frames alike: :mod:`msdm.facts`)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.facts.grammar")
