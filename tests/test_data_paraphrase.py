"""Paraphrases: strategies give the documented mix, the rule paraphraser keeps the facts of all 483 real prompts, the
fact checker catches every kind of change, an LLM's output goes through the same filter, and `msdm paraphrase` works."""

import json
import re
from collections import Counter

import pytest

from msdm.data.facts import COLOURS, extract_facts, fact_violations, keeps_facts
from msdm.data.paraphrase import (
    ParaphraseStrategy,
    generate_paraphrases,
    read_paraphrases,
    resolve_paraphrases,
    write_paraphrases_csv,
    write_paraphrases_json,
)
from msdm.data.paraphrase_rules import RuleParaphraser


@pytest.fixture(scope="module")
def real_prompts(shared_data):
    ps = [ln.strip() for ln in (shared_data / "prompts" / "medvqa_gi_2024_dev_unique_prompts.txt").read_text().splitlines()
          if ln.strip()]
    assert len(ps) == 483
    return ps


# --- strategies --------------------------------------------------------------------------------------------------

ORIGINALS = ["Generate an image with 1 polyp.", "Generate an image containing text."]
PARA = {ORIGINALS[0]: ["Create an image with a single polyp.", "Make a picture showing 1 polyp.",
                       "Render an image with exactly 1 polyp."],
        ORIGINALS[1]: ["Create a picture that contains text.", "Make an image showing text.", "Produce an image depicting text."]}


def _original_share(strategy, originals=ORIGINALS, paraphrases=PARA, draws=6000):
    s = ParaphraseStrategy.parse(strategy)
    hits = 0
    for k in range(draws):
        caption, original = s.draw(originals, paraphrases, seed=0, epoch=k // 100, index=k % 100)
        assert original in originals and (caption == original or caption in paraphrases.get(original, ()))
        hits += caption == original
    return hits / draws


@pytest.mark.parametrize("spec, expected", [("none", 1.0), ("add", 1 / 4), ("substitute(0.3)", 0.7),
                                            ("substitute", 0.5), ("replace", 0.0)])
def test_each_strategy_gives_its_documented_mix(spec, expected):
    assert ParaphraseStrategy.parse(spec).expected_original_fraction(3) == pytest.approx(expected)
    assert _original_share(spec) == pytest.approx(expected, abs=0.03)


def test_originals_are_drawn_uniformly_and_replace_keeps_prompts_without_paraphrases():
    s = ParaphraseStrategy.parse("replace")
    only_one = {ORIGINALS[0]: PARA[ORIGINALS[0]]}
    counts = Counter(s.draw(ORIGINALS, only_one, 0, e, 0)[1] for e in range(4000))
    assert abs(counts[ORIGINALS[0]] - counts[ORIGINALS[1]]) < 300
    assert _original_share("replace", paraphrases=only_one) == pytest.approx(0.5, abs=0.03)


def test_draws_are_seeded_and_epoch_dependent():
    s = ParaphraseStrategy.parse("add")
    a = [s.draw(ORIGINALS, PARA, 1, e, 3)[0] for e in range(30)]
    assert a == [s.draw(ORIGINALS, PARA, 1, e, 3)[0] for e in range(30)]
    assert len(set(a)) > 3  # changes with the epoch
    assert a != [s.draw(ORIGINALS, PARA, 2, e, 3)[0] for e in range(30)]


def test_strategy_parsing():
    assert str(ParaphraseStrategy.parse("substitute:0.25")) == "substitute(0.25)"
    assert ParaphraseStrategy.parse("sub(0.1)").p == 0.1
    with pytest.raises(ValueError, match="none"):
        ParaphraseStrategy.parse("mix")
    with pytest.raises(ValueError):
        ParaphraseStrategy.parse("substitute(1.5)")


# --- files -------------------------------------------------------------------------------------------------------


def test_reference_csv_and_json_round_trip(tmp_path):
    write_paraphrases_json(tmp_path / "p.json", PARA)
    assert read_paraphrases(tmp_path / "p.json") == PARA
    rows = write_paraphrases_csv(tmp_path / "p.csv", PARA, {ORIGINALS[0]: ["a.jpg", "b.jpg"]})
    assert rows == 3 * 2 + 3
    assert read_paraphrases(tmp_path / "p.csv") == PARA
    (tmp_path / "ref.csv").write_text("Filename;Prompt;Paraphrase\na.jpg;P one.;Q one.\nb.jpg;P one.;Q two.\nc.jpg;P one.;\n")
    assert read_paraphrases(tmp_path / "ref.csv") == {"P one.": ["Q one.", "Q two."]}
    (tmp_path / "bad.csv").write_text("Filename,Text\n")
    with pytest.raises(ValueError, match="Prompt and Paraphrase"):
        read_paraphrases(tmp_path / "bad.csv")


# --- rule paraphraser and fact checker -----------------------------------------------------------------------------


def test_rule_paraphraser_keeps_facts_for_all_483_prompts(real_prompts):
    rp = RuleParaphraser(seed=0)
    mapping, report = generate_paraphrases(real_prompts, rp, n=10)
    assert report.dropped == 0 and report.prompts_without_paraphrase == []
    assert len(mapping) == 483 and all(len(v) == 10 for v in mapping.values())
    for p, paras in mapping.items():
        assert p not in paras and len(set(paras)) == 10
        for q in paras:
            assert keeps_facts(p, q), (p, q, fact_violations(p, q))
    assert {rp.rule_of(p) for p in real_prompts} - {"fallback"} == {rp.rule_of(p) for p in real_prompts}
    assert rp.generate(real_prompts[:20], 10) == RuleParaphraser(seed=0).generate(real_prompts[:20], 10)
    assert sum(len(rp.candidates(p)) for p in real_prompts) > 11000  # the paper's scale: 483 → over 11 000


_SWAPS = [
    (r"\bcolonoscopy\b", "gastroscopy"), (r"\bgastroscopy\b", "colonoscopy"),
    (r"\bbiopsy forceps", "metal clip"), (r"\bmetal clip\b", "injection needle"), (r"\btube\b", "polyp snare"),
    (r"\bpolyp snare\b", "biopsy forceps"), (r"\binjection needle\b", "tube"), (r"\binstrument(s?)\b", r"polyp\1"),
    (r"\boesophagitis\b", "ulcerative colitis"), (r"\bcecum\b", "pylorus"), (r"\bileum\b", "cecum"),
    (r"\bpylorus\b", "ileum"), (r"\bz-line\b", "cecum"), (r"\bbarretts\b", "oesophagitis"),
    (r"\btext\b", "a polyp"), (r"\bgreen/black box artefact\b", "black box"), (r"\bfinding(s?)\b", r"instrument\1"),
    (r"\bparis ip\b", "paris is"), (r"\bparis is\b", "paris iia"), (r"\bparis iia\b", "paris ip"),
    (r">20mm", "<20mm"), (r"< 5mm", "> 5mm"), (r"\banatomical landmark\b", "instrument"),
    (r"\bnot containing\b", "containing"), (r"\bwith no\b", "with"),
    (r"\ba polyp\.", "an instrument."), (r"polypand", "tubeand"), (r"\bulcerative colitis\b", "oesophagitis"),
    (r"andtube\b", "andinjection needle"), (r"andmetal clip\b", "andtube"),
]
_LOCS = ["center", "upper-left", "upper-right", "lower-left", "lower-right", "center-left", "center-right",
         "upper-center", "lower-center"]


def _mutations(p: str) -> list[str]:
    out = []
    if m := re.search(r"\d+", p):
        out.append(p[: m.start()] + str(int(m[0]) + 1) + p[m.end():])
    for rx, rep in _SWAPS:
        if re.search(rx, p):
            out.append(re.sub(rx, rep, p, count=1))
    cols = [c for c in COLOURS if re.search(rf"\b{c}\b", p, re.I)]
    if cols:
        other = next(c for c in ("violet", "green", "blue", "orange") if c not in cols)
        out.append(re.sub(rf"\b{cols[0]}\b", other, p, count=1, flags=re.I))
    locs = re.findall(r"\b(?:center|upper|lower)(?:-(?:left|right|center|rigth))?\b", p)
    if locs:
        fixed = [loc.replace("rigth", "right") for loc in locs]
        other = next((loc for loc in _LOCS if loc not in fixed), None)  # None: all nine cells are named
        if other:
            out.append(re.sub(rf"\b{re.escape(locs[-1])}\b(?!-)", other, p, count=1))
        out.append(re.sub(r" located in the .*\.$", ".", p))  # dropping the locations
    return out


def test_fact_checker_flags_every_kind_of_change_on_all_483_prompts(real_prompts):
    covered = 0
    for p in real_prompts:
        muts = [m for m in _mutations(p) if m != p]
        covered += bool(muts)
        for m in muts:
            assert fact_violations(p, m), f"not flagged: {p!r} -> {m!r}"
    assert covered == 483


@pytest.mark.parametrize("a, b", [
    ("Generate an image with 1 polyp.", "Show a picture with a single polyp."),
    ("Generate an image with 2 instruments.", "Create an image that contains two instruments."),
    ("Generate an image with an an anatomical landmark located in the lower-rigth.", "Make an image with an anatomical landmark in the lower right."),
    ("Generate an image with a polyp of size 5-10mm.", "Create an image with a polyp between 5 and 10 mm."),
    ("Generate an image with a polyp of size < 5mm.", "Create an image with a polyp smaller than 5 millimetres."),
    ("Generate an image with an abnormality with the colors grey and white.", "Make an image of a gray and white anomaly."),
    ("Generate an image not containing a green/black box artefact.", "Create an image without a green or black box artifact."),
    ("Generate an image with no instruments.", "Produce a picture free of any tools."),
    ("Generate an image containing biopsy forcepsandmetal clip.", "Create an image with biopsy forceps and a metal clip."),
])
def test_fact_checker_accepts_equivalent_wording(a, b):
    assert fact_violations(a, b) == []


def test_polyp_snare_is_an_instrument_not_a_polyp():
    f = extract_facts("Generate an image containing polyp snare.")
    assert f.instruments == {"snare"} and "polyp" not in f.findings


def test_rules_spec_generates_on_the_fly(real_prompts):
    mapping, desc = resolve_paraphrases("rules:3", real_prompts[:30])
    assert len(mapping) == 30 and all(len(v) == 3 for v in mapping.values()) and "rule-based" in desc
    assert resolve_paraphrases(None, real_prompts) == ({}, "none")


# --- LLM paraphraser with a tiny random causal LM -------------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny_causal_lm(tmp_path_factory):
    """A tiny random GPT-2 with a word-level tokenizer over the MEDVQA-GI words, saved like a hub model's local copy."""
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    from msdm.testing import MEDVQA_WORDS

    path = tmp_path_factory.mktemp("tiny_gpt2")
    words = ["<pad>", "<unk>", "<eos>"] + [w for w in MEDVQA_WORDS if w not in ("<", ">")] + ["paraphrase", "prompt", ":"]
    vocab = {w: i for i, w in enumerate(dict.fromkeys(words))}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.normalizer = normalizers.Lowercase()
    tk.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>", eos_token="<eos>",
                                  bos_token="<eos>", model_max_length=256)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(vocab), n_positions=256, n_embd=32, n_layer=1, n_head=2, bos_token_id=2,
                     eos_token_id=2, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


def test_llm_paraphraser_output_is_fact_checked(tiny_causal_lm, real_prompts):
    from msdm.data.paraphrase_llm import LLMParaphraser

    llm = LLMParaphraser(str(tiny_causal_lm), max_new_tokens=10, seed=0, device="cpu", oversample=2)
    prompts = real_prompts[:6]
    cands = llm.generate(prompts, n=3)
    assert len(cands) == 6 and all(len(c) == 6 for c in cands)
    assert cands == LLMParaphraser(str(tiny_causal_lm), max_new_tokens=10, seed=0, device="cpu").generate(prompts, 3)
    mapping, report = generate_paraphrases(prompts, llm, n=3)
    assert report.kept + report.dropped + report.duplicates + report.empty == 36
    assert report.dropped > 0  # random weights babble; the checker throws the babble away
    for p, qs in mapping.items():
        assert all(keeps_facts(p, q) for q in qs)


def test_llm_missing_model_gives_the_offline_fix():
    from msdm.data.paraphrase_llm import LLMParaphraser
    from msdm.hub import MissingWeightsError

    with pytest.raises(MissingWeightsError, match="huggingface-cli download"):
        LLMParaphraser("no-such-org/no-such-model", local_files_only=True)


# --- the command --------------------------------------------------------------------------------------------------


def test_msdm_paraphrase_command_rule_based(tmp_path, shared_data, capsys):
    from msdm.cli import main

    src = shared_data / "prompts" / "medvqa_gi_2024_dev_prompt_counts.csv"
    rc = main(["paraphrase", "--prompts", str(src), "--n", "2", "--out-json", str(tmp_path / "p.json"),
               "--out-csv", str(tmp_path / "p.csv")])
    out = capsys.readouterr().out
    assert rc == 0 and "kept 966 paraphrases for 483/483 prompts" in out and "dropped 0" in out
    js = json.loads((tmp_path / "p.json").read_text())
    assert len(js) == 483 and read_paraphrases(tmp_path / "p.csv") == js


def test_msdm_paraphrase_command_with_a_model(tmp_path, tiny_causal_lm, capsys):
    from msdm.cli import main

    (tmp_path / "prompts.txt").write_text("Generate an image with 2 polyps.\nGenerate an image containing text.\n")
    rc = main(["paraphrase", "--prompts", str(tmp_path / "prompts.txt"), "--model", str(tiny_causal_lm), "--n", "2",
               "--max-new-tokens", "8", "--device", "cpu", "--out-json", str(tmp_path / "p.json")])
    out = capsys.readouterr().out
    assert "dropped" in out and (tmp_path / "p.json").exists()
    kept = json.loads((tmp_path / "p.json").read_text())
    assert rc == (0 if kept else 1)
    assert all(keeps_facts(p, q) for p, qs in kept.items() for q in qs)
