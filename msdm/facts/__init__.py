"""Facts: one vocabulary and one prompt grammar for captions, paraphrase checks and adherence scoring.

* :mod:`msdm.facts.vocabulary` — the words of the MEDVQA-GI 2024 prompts (locations, sizes, counts, kinds, ...);
* :mod:`msdm.facts.grammar` — :func:`parse_prompt`: the facts a prompt in the prompts' own grammar states;
* :mod:`msdm.facts.captions` — :func:`fact_sentences`: true captions of a facts dict, worded only as the 483
  MEDVQA-GI prompts are (negations included), and :func:`compose_caption`: several of them joined as sentences;
* :mod:`msdm.facts.checks` — :func:`extract_facts` / :func:`fact_violations`: does a free-text paraphrase keep the
  facts of its prompt;
* :mod:`msdm.facts.frames` — the facts of a real frame (Kvasir-SEG layout: image + polyp mask),
  :mod:`msdm.facts.table` their cached CSV table per folder, :mod:`msdm.facts.overlays` the box rule and
  :mod:`msdm.facts.dataset` the frames with captions from their true facts (a torch Dataset).

The synthetic scenes (:mod:`msdm.synthetic`) use the same vocabulary and grammar. The old modules
``msdm.data.facts``, ``msdm.metrics.prompt_facts`` and ``msdm.synthetic.prompt_facts`` are deprecated aliases.
"""

from msdm.facts.captions import compose_caption, fact_sentences
from msdm.facts.checks import extract_facts, fact_violations, keeps_facts
from msdm.facts.grammar import FACT_KEYS, empty_facts, parse_prompt

__all__ = ["FACT_KEYS", "compose_caption", "empty_facts", "extract_facts", "fact_sentences", "fact_violations",
           "keeps_facts", "parse_prompt"]
