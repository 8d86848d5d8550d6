"""Deprecated location: the paraphrase fact checks live in :mod:`msdm.facts.checks` (one fact vocabulary and one
prompt grammar for captions, paraphrase checks and adherence scoring: :mod:`msdm.facts`). Every public name is
re-exported here, so ``from msdm.data.facts import extract_facts`` keeps working."""

from msdm.facts.checks import (  # noqa: F401  (names without __all__ in the old module)
    COLOURS,
    LOCATIONS,
    NEGATIONS,
    NUMBER_WORDS,
    Facts,
    extract_facts,
    fact_violations,
    keeps_facts,
    mentions_colour,
    mentions_horizontal_side,
    mentions_location,
    mentions_text_or_artefact,
    mentions_vertical_side,
    normalize_text,
)
