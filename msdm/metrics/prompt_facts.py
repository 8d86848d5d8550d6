"""Deprecated location: the prompt grammar lives in :mod:`msdm.facts.grammar` (one fact vocabulary and one prompt
grammar for captions, paraphrase checks and adherence scoring: :mod:`msdm.facts`). Re-exported here, so
``from msdm.metrics.prompt_facts import parse_prompt`` keeps working."""

from msdm.facts.grammar import COLORS, FACT_KEYS, INSTRUMENT_KINDS, empty_facts, parse_prompt  # noqa: F401

__all__ = ["FACT_KEYS", "INSTRUMENT_KINDS", "COLORS", "parse_prompt", "empty_facts"]
