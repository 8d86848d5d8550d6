"""The one fact vocabulary of msdm: the words of the MEDVQA-GI 2024 prompts.

Every part of msdm that reads or writes facts uses these tables: the prompt grammar (:mod:`msdm.facts.grammar`,
parsing and composing captions), the paraphrase fact checks (:mod:`msdm.facts.checks`), the facts of a real frame
(:mod:`msdm.facts.frames`), the synthetic scenes (:mod:`msdm.synthetic.scene`) and the adherence detectors. The values
and their orders are those of the 483 unique prompts of the MEDVQA-GI 2024 dev set
(``../shared/data/prompts/medvqa_gi_2024_dev_unique_prompts.txt``); ``tests/test_facts_grammar.py`` checks them
against that file.
"""

from __future__ import annotations

# =====================================================================================================================
# Facts a caption can state (the scene-caption grammar, msdm.facts.grammar)
# =====================================================================================================================

#: The nine location cells, row-major over the 3 x 3 grid of the image (sampling positions, grid geometry).
LOCATIONS: tuple[str, ...] = (
    "upper-left", "upper-center", "upper-right",
    "center-left", "center", "center-right",
    "lower-left", "lower-center", "lower-right",
)  # fmt: skip
#: The order in which the real prompts list locations ("... located in the center, upper-left, upper-right,
#: lower-left, lower-right, center-left, center-right, upper-center and lower-center.").
CAPTION_LOCATION_ORDER: tuple[str, ...] = (
    "center", "upper-left", "upper-right", "lower-left", "lower-right",
    "center-left", "center-right", "upper-center", "lower-center",
)  # fmt: skip
#: Each cell mirrored left-right and top-bottom (what a horizontal / vertical flip of the image does to it).
HFLIP_LOCATION: dict[str, str] = {c: c.replace("left", "@").replace("right", "left").replace("@", "right")
                                  for c in LOCATIONS}
VFLIP_LOCATION: dict[str, str] = {c: c.replace("upper", "@").replace("lower", "upper").replace("@", "lower")
                                  for c in LOCATIONS}
#: Polyp size classes, in the order the real prompts list them ("polyps of size < 5mm and 5-10mm").
POLYP_SIZES: tuple[str, ...] = ("< 5mm", "5-10mm", "11-20mm", ">20mm")
#: Polyp counts the real prompts state ("with 1 polyp", "with 2 polyps", ... "with 16 polyps"; "with no polyps").
PROMPT_POLYP_COUNTS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 16)
#: Paris classes, in the order the real prompts list them ("polyps of type paris ip and paris is",
#: "paris is and paris iia", "paris ip and paris iia").
PARIS_TYPES: tuple[str, ...] = ("ip", "is", "iia")
#: Instrument kinds of the real prompts, in the order they concatenate them ("polyp snareandtube",
#: "biopsy forcepsandtube", "polyp snareandmetal clip", "metal clipandtube").
INSTRUMENT_KINDS: tuple[str, ...] = ("polyp snare", "biopsy forceps", "metal clip", "injection needle", "tube")
#: Abnormality colour phrases of the real prompts ("an abnormality with the colors pink, red and white").
COLORS: tuple[str, ...] = ("pale pink", "pink/red", "pink", "red", "white", "yellow", "orange", "brown", "burgundy",
                           "violet", "purple", "blue", "grey", "green", "black")
PROCEDURES: tuple[str, ...] = ("colonoscopy", "gastroscopy")

# =====================================================================================================================
# Words of free text (the paraphrase fact checks, msdm.facts.checks)
# =====================================================================================================================

#: Colour words (single words; "ink" and "pale" occur as colour words in the real prompts).
COLOURS: tuple[str, ...] = ("pink", "red", "white", "yellow", "black", "grey", "blue", "green", "orange", "purple",
                            "violet", "brown", "burgundy", "ink", "pale")
#: Location words, compounds first.
LOCATION_WORDS: tuple[str, ...] = ("upper-left", "upper-right", "upper-center", "lower-left", "lower-right",
                                   "lower-center", "center-left", "center-right", "center", "upper", "lower", "left",
                                   "right")
NUMBER_WORDS: dict[str, int] = {
    "one": 1, "single": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9,
    "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20,
}  # fmt: skip
NEGATIONS: tuple[str, ...] = ("no", "not", "without", "none", "free of", "absence", "absent", "lacking", "devoid",
                              "zero", "neither", "nor", "n't", "excluding", "exclude", "excludes")
