"""Deprecated alias: the paraphrase fact checks live in :mod:`msdm.facts.checks` (one fact vocabulary and one prompt
grammar for captions, paraphrase checks and adherence scoring: :mod:`msdm.facts`)."""

from msdm._compat import alias_module

alias_module(__name__, "msdm.facts.checks")
