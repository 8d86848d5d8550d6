"""parse_prompt: every true caption of sampled scenes reads back as the scene's attributes, composed or not."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from msdm.synthetic.captions import captions_for, scene_locations
from msdm.synthetic.prompt_facts import FACT_KEYS, parse_prompt
from msdm.synthetic.prompt_scenes import scene_facts
from msdm.synthetic.scene import sample_attributes

PROMPTS_CSV = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "prompts" / (
    "medvqa_gi_2024_dev_prompt_counts.csv")


def _truth(attrs, locations) -> dict:
    """The facts of a scene, computed from its attributes (independently of the caption wording)."""
    return scene_facts(attrs, locations)


@pytest.fixture(scope="module")
def scenes():
    rng = np.random.default_rng(123)
    out = []
    for _ in range(300):
        attrs = sample_attributes(rng)
        locations = scene_locations(attrs)
        out.append((attrs, captions_for(attrs, locations), _truth(attrs, locations)))
    return out


def _check(facts: dict, truth: dict, prompt: str) -> set[str]:
    assert facts["unparsed"] == [] and facts["conflicts"] == [], (prompt, facts)
    said = {k for k in FACT_KEYS if facts[k] is not None}
    for k in said:
        assert facts[k] == truth[k], (prompt, k, facts[k], truth[k])
    return said


def test_every_true_caption_reads_back_as_the_attributes(scenes):
    covered = set()
    for _, captions, truth in scenes:
        for caption in captions:
            said = _check(parse_prompt(caption), truth, caption)
            assert said, f"caption {caption!r} gave no fact"
            covered |= said
    assert covered == set(FACT_KEYS)  # every fact is exercised by some caption


def test_composed_sentences_read_back_as_the_attributes(scenes):
    rng = np.random.default_rng(0)
    for _, captions, truth in scenes:
        k = int(rng.integers(2, len(captions) + 1))
        chosen = [captions[int(i)] for i in rng.permutation(len(captions))[:k]]
        prompt = " ".join(chosen)
        said = _check(parse_prompt(prompt), truth, prompt)
        assert said == set().union(*(_check(parse_prompt(c), truth, c) for c in chosen))
    # all of a scene's captions together pin down every fact it has
    _, captions, truth = scenes[0]
    facts = parse_prompt(" ".join(captions))
    _check(facts, truth, " ".join(captions))
    assert {k for k in FACT_KEYS if facts[k] is None} <= {"instrument_kinds", "instrument_locations",
                                                          "polyp_sizes", "polyp_paris", "polyp_colors",
                                                          "polyp_locations"}


def _as_clause(caption: str) -> str:
    """'Generate an image containing text.' -> 'containing text'; 'Generate a polyp of type paris ip.' -> 'with a
    polyp of type paris ip' (what the lead's composed captions do)."""
    body = caption.rstrip(".")
    body = re.sub(r"^Generate an image ", "", body)
    return re.sub(r"^Generate ", "with ", body)


def test_clauses_joined_in_one_sentence_read_back_as_the_attributes(scenes):
    rng = np.random.default_rng(1)
    seps = [", ", " and ", ", and "]
    for _, captions, truth in scenes:
        k = int(rng.integers(2, min(6, len(captions)) + 1))
        clauses = [_as_clause(captions[int(i)]) for i in rng.permutation(len(captions))[:k]]
        body = clauses[0] + "".join(seps[int(rng.integers(3))] + c for c in clauses[1:])
        prompt = f"Generate an image {body}."
        _check(parse_prompt(prompt), truth, prompt)


def test_the_issue_examples_and_negations():
    f = parse_prompt("Generate an image containing text, with 1 polyp and not containing a green/black box artefact.")
    assert (f["text"], f["polyp"], f["polyp_count"], f["box"]) == (True, True, 1, False)
    f = parse_prompt("Generate an image containing text. Generate an image with 1 polyp. "
                     "Generate an image not containing a green/black box artefact.")
    assert (f["text"], f["polyp"], f["polyp_count"], f["box"]) == (True, True, 1, False)
    # a negation never reads as the positive, and covers the items its keyword governs
    assert parse_prompt("Generate an image not containing text.")["text"] is False
    f = parse_prompt("Generate an image not containing text and a green/black box artefact.")
    assert (f["text"], f["box"]) == (False, False)
    f = parse_prompt("Generate an image not containing text, containing a green/black box artefact.")
    assert (f["text"], f["box"]) == (False, True)
    assert parse_prompt("Generate an image with no polyps.")["polyp"] is False
    assert parse_prompt("Generate an image with no findings.")["polyp_count"] == 0
    assert parse_prompt("Generate an image with no instruments.")["instrument"] is False
    f = parse_prompt("Generate an image with 1 polyp and no instruments.")
    assert (f["polyp_count"], f["instrument"], f["instrument_count"]) == (1, False, 0)
    f = parse_prompt("Generate an image containing polyp snareandtube.")
    assert (f["instrument"], f["instrument_kinds"]) == (True, ("polyp snare", "tube"))
    f = parse_prompt("Generate an image with an an instrument located in the lower-right and center.")
    assert (f["instrument"], f["instrument_locations"]) == (True, ("center", "lower-right"))
    f = parse_prompt("Generate an image with 2 polyps, a polyp of size >20mm and an abnormality located in the center")
    assert (f["polyp_count"], f["polyp_sizes"], f["polyp_locations"]) == (2, (">20mm",), ("center",))
    assert parse_prompt("generate   an IMAGE containing TEXT")["text"] is True  # case and spacing


def test_unknown_or_contradictory_text_is_reported_never_misread():
    # an unknown word in a list: the whole sentence is reported and gives nothing (not "pink" alone)
    f = parse_prompt("Generate an image with an abnormality with the colors pink and ink. Generate an image "
                     "containing text.")
    assert f["polyp_colors"] is None and f["polyp"] is None and f["text"] is True
    assert f["unparsed"] == ["Generate an image with an abnormality with the colors pink and ink"]
    for prompt in ["Generate an image containing a polypandulcerative colitis.", "Generate an image containing the z-line.",
                   "Generate an image not containing tube.", "Generate an image containing texts.",
                   "Generate an image with 1 polyp or 2 polyps.", "A photo of a cat."]:
        f = parse_prompt(prompt)
        assert f["unparsed"] and all(f[k] is None for k in FACT_KEYS), (prompt, f)
    f = parse_prompt("Generate an image with 1 polyp. Generate an image with no findings. Generate an image containing"
                     " text.")
    assert f["polyp"] is None and f["polyp_count"] is None and f["text"] is True
    assert len(f["conflicts"]) == 2


def test_real_medvqa_prompts_parse_or_name_what_the_scenes_lack():
    if not PROMPTS_CSV.exists():
        pytest.skip(f"real prompt list not found at {PROMPTS_CSV}")
    prompts = [row["prompt"] for row in csv.DictReader(PROMPTS_CSV.open())]
    outside = re.compile(r"anatomical landmark|colitis|oesophagitis|barretts|z-line|cecum|ileum|pylorus|colors ink|"
                         r"Pink findings")
    for prompt in prompts:
        f = parse_prompt(prompt)
        assert bool(f["unparsed"]) == bool(outside.search(prompt)), (prompt, f)
    assert sum(not parse_prompt(p)["unparsed"] for p in prompts) >= 360


def test_training_captions_of_the_synthetic_dataset_read_back(scenes):
    """What SyntheticGIDataset(caption_facts=K) trains on (msdm.data.compose) parses in full and truly."""
    from msdm.data.compose import compose_caption

    rng = np.random.default_rng(2)
    for _, captions, truth in scenes[:100]:
        caption = compose_caption(captions, rng, max_facts=4)
        _check(parse_prompt(caption), truth, caption)
