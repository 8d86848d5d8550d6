"""``msdm annotate report``: unblind the ratings and relate them to the automatic metrics (Prompt to Polyp §5.1.2).

What it computes, from ``ratings.sqlite`` and the sealed key (checked against the study's commitment first):

* **aspect scores** — per model and aspect, mean ± sample standard deviation over every (rater, prompt) score,
  as a grouped bar chart like the paper's Figure 5 (``aspects.png``), also split by original / rephrased prompts;
* **per-prompt ranks** — a rater's rank of a prompt counts only when it is complete (every set and the real images
  ranked, each rank once). The *expert rank tier* of (prompt, model) is its mean rank over raters (1 = best);
* **automatic metrics per prompt** — from features of exactly the images the raters saw (the study's copies, pixel
  identical to the generated files) with the metrics code (:mod:`msdm.metrics.realism.challenge`): FBD = Fréchet distance
  between the model's set and the prompt's real reference images (raw features), Diversity = mean pairwise distance
  within the set (L2-normalised features), Agreement = mean cosine similarity between the model's sets for the
  original and the rephrased prompt of a pair (the same value for both prompts of the pair). Features come from a
  configurable extractor (BiomedCLIP by default, as in the challenge). With ~10 images per side a per-prompt FBD is
  noisy and biased upwards; it ranks sets of the same prompt, it is not comparable with a 5 000-image FBD;
* **rank vs metric** — Spearman ρ and Kendall τ-b (with two-sided p-values) between the expert rank tier and each
  metric over all (prompt, model) points, and a figure like the paper's Figure 6 (``ranks_vs_metrics.png``).
  ρ > 0 means that sets the experts ranked worse have a larger value of the metric (what one hopes for FBD);
* **inter-rater agreement** — Krippendorff's α (:mod:`msdm.annotate.agreement`): interval and ordinal for the
  scores (per aspect and pooled), ordinal for the per-prompt ranks and for the Global Preference;
* **global preference** — mean global rank and first places per model.

Everything goes to ``STUDY/report/`` (or ``out``), written atomically: ``summary.md``, ``results.json``,
``per_prompt.csv``, ``aspects.png``, ``ranks_vs_metrics.png``. The rating server never serves this folder.
"""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from msdm.annotate.agreement import krippendorff_alpha, reliability_matrix
from msdm.annotate.figures import figure_aspects, figure_ranks_vs_metrics
from msdm.annotate.store import GLOBAL_RANK, RANK, RatingStore
from msdm.annotate.study import ASPECT_IDS, GLOBAL, KEY_FILE, RATINGS_FILE, REAL, StudyError, load_key, load_study
from msdm.io import atomic_directory

METRICS = {  # key: (label, what a *positive* correlation with the rank (1 = best) means)
    "fbd": ("FBD", "sets ranked worse are farther from the real images"),
    "agreement": ("Agreement", "sets ranked worse agree more between original and rephrased prompt"),
    "diversity": ("Diversity", "sets ranked worse are more diverse"),
}


# ----------------------------------------------------------------------------------------------------------------
# Unblinding and summaries
# ----------------------------------------------------------------------------------------------------------------


def unblind(study: dict, key: dict, answers: list[dict]) -> list[dict]:
    """Answers with the model behind each letter: rows ``{rater, prompt, kind, item, model, aspect, value}``."""
    rows = []
    for a in answers:
        k = a["prompt"]
        if k == GLOBAL:
            model, kind = key["global"]["letters"][a["item"]], "global"
        else:
            kind = study["prompts"][k]["kind"]
            model = REAL if a["item"] == REAL else key["prompts"][k]["letters"][a["item"]]
        rows.append({"rater": a["rater"], "prompt": k, "kind": kind, "item": a["item"], "model": model,
                     "aspect": a["aspect"], "value": a["value"]})
    return rows


def _mean_std(values) -> dict:
    v = np.asarray(values, dtype=float)
    return {"mean": float(v.mean()) if len(v) else None,
            "std": float(v.std(ddof=1)) if len(v) > 1 else (0.0 if len(v) == 1 else None), "n": int(len(v))}


def aspect_summary(rows: list[dict], models: list[str], kind: str | None = None) -> dict:
    """``{model: {aspect: {"mean", "std", "n"}, "overall": {...}}}`` over all (rater, prompt) scores."""
    out = {}
    for m in models:
        sel = [r for r in rows if r["model"] == m and r["aspect"] in ASPECT_IDS and (kind is None or r["kind"] == kind)]
        out[m] = {a: _mean_std([r["value"] for r in sel if r["aspect"] == a]) for a in ASPECT_IDS}
        out[m]["overall"] = _mean_std([r["value"] for r in sel])
    return out


def valid_ranks(rows: list[dict], aspect: str) -> dict[tuple[str, int], dict[str, int]]:
    """``{(rater, prompt): {model: rank}}`` for complete rankings only (every item ranked, each rank once)."""
    by = defaultdict(dict)
    for r in rows:
        if r["aspect"] == aspect:
            by[(r["rater"], r["prompt"])][r["model"]] = r["value"]
    return by


def rank_tables(study: dict, key: dict, rows: list[dict]) -> tuple[dict, dict, dict]:
    """(per (prompt, model) mean rank over raters, per-model rank summary, global preference summary)."""
    n_items = len(study["letters"]) + 1
    ranks = {rp: m for rp, m in valid_ranks(rows, RANK).items()
             if len(m) == n_items and sorted(m.values()) == list(range(1, n_items + 1))}
    per_prompt: dict[tuple[int, str], list[int]] = defaultdict(list)
    for (_, k), m in ranks.items():
        for model, v in m.items():
            per_prompt[(k, model)].append(v)
    tier = {pk: {"mean_rank": float(np.mean(v)), "n_raters": len(v)} for pk, v in per_prompt.items()}
    models = list(key["models"]) + [REAL]
    summary = {}
    for m in models:
        vals = [v for (_, model), vs in per_prompt.items() if model == m for v in vs]
        firsts = sum(1 for mm in ranks.values() if mm.get(m) == 1)
        above_real = sum(1 for mm in ranks.values() if m != REAL and mm[m] < mm[REAL])
        summary[m] = {**_mean_std(vals), "first_places": firsts,
                      "above_real": above_real if m != REAL else None, "rankings": len(ranks)}
    g_letters = key["global"]["letters"]
    gl = {rp: m for rp, m in valid_ranks(rows, GLOBAL_RANK).items()
          if len(m) == len(g_letters) and sorted(m.values()) == list(range(1, len(g_letters) + 1))}
    glob = {}
    for m in key["models"]:
        vals = [mm[m] for mm in gl.values()]
        glob[m] = {**_mean_std(vals), "first_places": sum(1 for v in vals if v == 1)}
    return tier, summary, glob


def agreement_summary(rows: list[dict], raters: list[str]) -> list[dict]:
    """Krippendorff's α for each kind of judgement (empty with fewer than two raters)."""
    if len(raters) < 2:
        return []
    out = []

    def add(what, ratings, levels):
        x, rs, units = reliability_matrix(ratings)
        for level in levels:
            out.append({"what": what, "level": level, "alpha": krippendorff_alpha(x, level),
                        "units": len(units), "raters": len(rs)})

    scores = [r for r in rows if r["aspect"] in ASPECT_IDS]
    for a in ASPECT_IDS:
        add(f"score: {a}", [(r["rater"], (r["prompt"], r["model"]), r["value"]) for r in scores if r["aspect"] == a],
            ("interval", "ordinal"))
    add("score: all aspects", [(r["rater"], (r["prompt"], r["model"], r["aspect"]), r["value"]) for r in scores],
        ("interval", "ordinal"))
    add("per-prompt rank", [(r["rater"], (r["prompt"], r["model"]), r["value"]) for r in rows if r["aspect"] == RANK],
        ("ordinal",))
    g = [(r["rater"], r["model"], r["value"]) for r in rows if r["aspect"] == GLOBAL_RANK]
    if g:
        add("global preference", g, ("ordinal",))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Automatic metrics per prompt
# ----------------------------------------------------------------------------------------------------------------


def _build_extractor(extractor, source, device):
    if extractor is None or extractor == "none":
        return None
    if not isinstance(extractor, str):
        return extractor  # a FeatureExtractor instance
    from msdm.hub import MissingWeightsError
    from msdm.metrics.realism.features import build_extractor

    try:
        return build_extractor(extractor, source, device=device)
    except MissingWeightsError as e:
        raise StudyError(f"{e}\n(or pass --extractor none to report without the automatic metrics)") from None


def study_metrics(study_dir: Path, study: dict, key: dict, extractor, batch_size: int = 32) -> dict:
    """``{"per_prompt": {(k, model): {"fbd", "fidelity", "agreement", "diversity"}}, "per_model": {model:
    challenge scores over the study's prompts}, "extractor": describe()}``."""
    from msdm.metrics.realism.challenge import challenge_scores, per_prompt_metrics

    paths = sorted({p for pr in study["prompts"] for p in pr["real"] + [x for v in pr["sets"].values() for x in v]})
    feats = extractor.extract_paths([study_dir / p for p in paths], batch_size=batch_size,
                                    desc=f"{extractor.name} features of the study images").double().numpy()
    f = dict(zip(paths, feats))
    stack = lambda rels: np.stack([f[r] for r in rels])  # noqa: E731
    real = {pr["index"]: stack(pr["real"]) for pr in study["prompts"]}
    pairs = ([(pr["index"], pr["pair"]) for pr in study["prompts"] if pr["pair"] is not None and pr["index"] % 2 == 0]
             if study.get("paired") else None)
    per_prompt, per_model = {}, {}
    for model in key["models"]:
        gen = {}
        for pr, kp in zip(study["prompts"], key["prompts"]):
            letter = next(le for le, m in kp["letters"].items() if m == model)
            gen[pr["index"]] = stack(pr["sets"][letter])
        # one real image per prompt: FD with a point mass (Σ_real = 0), the formula's limit (msdm.metrics.realism.challenge)
        pm = per_prompt_metrics(gen, real, pairs=pairs, single_real="zero-covariance")
        for k, v in pm.items():
            per_prompt[(k, model)] = {m: v.get(m) for m in ("fbd", "fidelity", "agreement", "diversity")}
        if pairs:
            s = challenge_scores(gen, real, pairs=pairs, single_real="zero-covariance")
            per_model[model] = {k: s[k] for k in ("FBD", "fidelity", "agreement", "diversity")}
    return {"per_prompt": per_prompt, "per_model": per_model, "extractor": extractor.describe()}


def correlations(tier: dict, per_prompt: dict) -> dict:
    """Spearman and Kendall (τ-b) between the expert rank tier and each metric over the (prompt, model) points."""
    from scipy.stats import kendalltau, spearmanr

    out = {}
    for m in METRICS:
        pts = [(tier[pk]["mean_rank"], per_prompt[pk][m]) for pk in tier
               if pk in per_prompt and per_prompt[pk].get(m) is not None]
        res = {"n": len(pts), "spearman_rho": None, "spearman_p": None, "kendall_tau": None, "kendall_p": None}
        if len(pts) >= 3 and len({x for x, _ in pts}) > 1 and len({y for _, y in pts}) > 1:
            x, y = np.array(pts).T
            rho, p_rho = spearmanr(x, y)
            tau, p_tau = kendalltau(x, y)
            res.update(spearman_rho=float(rho), spearman_p=float(p_rho), kendall_tau=float(tau), kendall_p=float(p_tau))
        out[m] = res
    return out


# ----------------------------------------------------------------------------------------------------------------
# The report
# ----------------------------------------------------------------------------------------------------------------


def _f(x, nd=2) -> str:
    return "–" if x is None or (isinstance(x, float) and np.isnan(x)) else f"{x:.{nd}f}"


def _p(x) -> str:
    return "–" if x is None else (f"{x:.2g}" if x >= 1e-4 else "<1e-4")


def analyse(study_dir, key_path=None, db_path=None, extractor="biomedclip", extractor_source=None, device=None,
            batch_size: int = 32, exclude_raters=()) -> dict:
    """Everything the report holds, as a dict (``results.json``). ``exclude_raters``: raters whose answers and
    comments are left out (test runs, a pilot); naming one that has no answers is an error (a typo would otherwise
    keep the rater in silently)."""
    study_dir = Path(study_dir)
    study = load_study(study_dir)
    key = load_key(study, key_path or study_dir / KEY_FILE)
    db_path = Path(db_path or study_dir / RATINGS_FILE)
    if not db_path.is_file():
        raise StudyError(f"no ratings: {db_path} does not exist (run `msdm annotate serve` and collect some first)")
    store = RatingStore(db_path, study)
    answers = store.answers()
    excluded = sorted(set(exclude_raters))
    unknown = [r for r in excluded if r not in {a["rater"] for a in answers}]
    if unknown:
        raise StudyError(f"--exclude-rater {', '.join(unknown)}: no such rater in {db_path} (raters: "
                         f"{', '.join(sorted({a['rater'] for a in answers})) or 'none'})")
    answers = [a for a in answers if a["rater"] not in excluded]
    raters = sorted({a["rater"] for a in answers})
    rows = unblind(study, key, answers)
    models = list(key["models"])
    labels = {a["id"]: a["label"] for a in study["aspects"]}
    tier, rank_summary, glob = rank_tables(study, key, rows)
    completeness = {r: store.progress(r) for r in raters}
    res = {
        "study": {"id": study["id"], "title": study["title"], "created": study["created"],
                  "num_prompts": len(study["prompts"]), "paired": study.get("paired"), "mapping": key.get("mapping"),
                  "key_sha256": study["key_sha256"]},
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "models": models, "raters": raters, "excluded_raters": excluded,
        "completeness": {r: {"prompts_complete": len(p["complete"]), "global_complete": p["global_complete"]}
                         for r, p in completeness.items()},
        "num_answers": len(answers),
        "aspect_labels": labels,
        "aspects": aspect_summary(rows, models),
        "aspects_by_kind": ({k: aspect_summary(rows, models, k) for k in ("original", "rephrased")}
                            if study.get("paired") else {}),
        "ranks": rank_summary,
        "global_preference": glob,
        "agreement": agreement_summary(rows, raters),
        "comments": [c for c in store.comments() if c["rater"] not in excluded],
    }
    ext = _build_extractor(extractor, extractor_source, device)
    metrics = study_metrics(study_dir, study, key, ext, batch_size) if ext is not None else None
    per_prompt = metrics["per_prompt"] if metrics else {}
    res["metrics"] = None if metrics is None else {"extractor": metrics["extractor"], "per_model": metrics["per_model"]}
    res["correlations"] = correlations(tier, per_prompt) if metrics else None
    table = []
    for pr, kp in zip(study["prompts"], key["prompts"]):
        for item, model in [*kp["letters"].items(), (REAL, REAL)]:
            t = tier.get((pr["index"], model), {})
            scores = [r for r in rows if r["prompt"] == pr["index"] and r["model"] == model and r["aspect"] in ASPECT_IDS]
            table.append({
                "prompt": pr["index"], "number": pr["number"], "kind": pr["kind"], "source_prompt": pr["source_prompt"],
                "text": pr["text"], "model": model, "letter": item if model != REAL else None,
                "mean_rank": t.get("mean_rank"), "n_raters": t.get("n_raters", 0),
                **{m: per_prompt.get((pr["index"], model), {}).get(m) for m in METRICS},
                **{f"score_{a}": _mean_std([r["value"] for r in scores if r["aspect"] == a])["mean"] for a in ASPECT_IDS},
            })
    res["per_prompt"] = table
    res["_tier"] = tier
    res["_per_prompt_metrics"] = per_prompt
    return res


def summary_markdown(res: dict) -> str:
    models, labels = res["models"], res["aspect_labels"]
    s = res["study"]
    L = [f"# Expert evaluation: {s['title']}", ""]
    L.append(f"Study `{s['id']}` (built {s['created']}), {s['num_prompts']} prompts"
             + (" (original at even, rephrased at odd indices)" if s["paired"] else "")
             + f", models {', '.join(f'**{m}**' for m in models)} shown under {s['mapping']} random letters. "
             f"Unblinded with the key whose SHA-256 matches the study's commitment (`{s['key_sha256'][:16]}…`). "
             f"Report generated {res['generated']}.")
    excl = res.get("excluded_raters") or []
    L += ["", f"**Raters**: {len(res['raters'])} ({', '.join(res['raters']) or 'none'}); {res['num_answers']} answers"
          + (f"; excluded: {', '.join(excl)}" if excl else "") + ".", ""]
    L += ["| rater | prompts complete | global preference |", "|---|---|---|"]
    for r, c in res["completeness"].items():
        L.append(f"| {r} | {c['prompts_complete']} / {s['num_prompts']} | {'yes' if c['global_complete'] else 'no'} |")
    L += ["", "## Aspect scores (0–10, mean ± std over raters × prompts)", "", "![aspect scores](aspects.png)", ""]
    L.append("| model | " + " | ".join(labels[a] for a in ASPECT_IDS) + " | overall |")
    L.append("|---" * (len(ASPECT_IDS) + 2) + "|")
    for m in models:
        a = res["aspects"][m]
        L.append(f"| {m} | " + " | ".join(f"{_f(a[x]['mean'])} ± {_f(a[x]['std'])}" for x in ASPECT_IDS)
                 + f" | {_f(a['overall']['mean'])} ± {_f(a['overall']['std'])} |")
    if res["aspects_by_kind"]:
        L += ["", "Mean over all aspects, by prompt kind:", "", "| model | original | rephrased |", "|---|---|---|"]
        for m in models:
            o, r = res["aspects_by_kind"]["original"][m]["overall"], res["aspects_by_kind"]["rephrased"][m]["overall"]
            L.append(f"| {m} | {_f(o['mean'])} ± {_f(o['std'])} | {_f(r['mean'])} ± {_f(r['std'])} |")
    n_items = len(models) + 1
    L += ["", f"## Per-prompt ranks (1 = best, {n_items} = worst; complete rankings only)", "",
          "| set | mean rank ± std | ranked first | ranked above the real images |", "|---|---|---|---|"]
    for m in sorted(res["ranks"], key=lambda m: (res["ranks"][m]["mean"] is None, res["ranks"][m]["mean"] or 0)):
        r = res["ranks"][m]
        above = "–" if r["above_real"] is None else f"{r['above_real']} / {r['rankings']}"
        L.append(f"| {'real images' if m == REAL else m} | {_f(r['mean'])} ± {_f(r['std'])} | "
                 f"{r['first_places']} / {r['rankings']} | {above} |")
    L += ["", "## Global preference (1 = preferred)", "", "| model | mean rank ± std | first places | raters |",
          "|---|---|---|---|"]
    for m in sorted(models, key=lambda m: (res["global_preference"][m]["mean"] is None,
                                           res["global_preference"][m]["mean"] or 0)):
        g = res["global_preference"][m]
        L.append(f"| {m} | {_f(g['mean'])} ± {_f(g['std'])} | {g['first_places']} | {g['n']} |")
    L += ["", "## Expert rank vs automatic metrics", ""]
    if res["metrics"] is None:
        L.append("Not computed (`--extractor none`).")
    else:
        e = res["metrics"]["extractor"]
        L += [f"Features: **{e.get('name')}** (`{e.get('source', '')}`, {e.get('feature_dim')}-d, fingerprint "
              f"`{str(e.get('fingerprint'))[:12]}`), from the images the raters saw. Each point is one (prompt, model) "
              "set: its expert rank tier (mean rank over raters) against its metric on that prompt alone.", "",
              "![ranks vs metrics](ranks_vs_metrics.png)", "",
              "| metric | Spearman ρ (p) | Kendall τ-b (p) | n | ρ > 0 means |", "|---|---|---|---|---|"]
        for m, (label, meaning) in METRICS.items():
            c = res["correlations"][m]
            L.append(f"| {label} | {_f(c['spearman_rho'])} ({_p(c['spearman_p'])}) | {_f(c['kendall_tau'])} "
                     f"({_p(c['kendall_p'])}) | {c['n']} | {meaning} |")
        if res["metrics"]["per_model"]:
            L += ["", "Challenge-style scores over the study's prompts (FBD over all sets; Fidelity = mean of "
                  "1000 / (1 + pair FD)):", "", "| model | FBD | Fidelity | Agreement | Diversity |",
                  "|---|---|---|---|---|"]
            for m, v in res["metrics"]["per_model"].items():
                L.append(f"| {m} | {_f(v['FBD'])} | {_f(v['fidelity'])} | {_f(v['agreement'], 3)} | "
                         f"{_f(v['diversity'], 3)} |")
    L += ["", "## Agreement between raters (Krippendorff's α)", ""]
    if not res["agreement"]:
        L.append("Fewer than two raters: no agreement to measure.")
    else:
        L += ["α = 1 is perfect agreement, 0 chance level (≥ 0.8 firm, ≥ 0.667 tentative, after Krippendorff).", "",
              "| judgement | level | α | units | raters |", "|---|---|---|---|---|"]
        for a in res["agreement"]:
            L.append(f"| {a['what']} | {a['level']} | {_f(a['alpha'], 3)} | {a['units']} | {a['raters']} |")
    if res["comments"]:
        L += ["", f"## Comments ({len(res['comments'])})", "", "In `results.json` (`comments`)."]
    L += ["", "## Files", "", "`results.json` (every number above), `per_prompt.csv` (one row per prompt and set: "
          "rank tier, metrics, mean scores), `aspects.png`, `ranks_vs_metrics.png`.", ""]
    return "\n".join(L)


def write_report(study_dir, key_path=None, db_path=None, out=None, extractor="biomedclip", extractor_source=None,
                 device=None, batch_size: int = 32, exclude_raters=()) -> Path:
    """Analyse and write the report folder (atomically); returns its path."""
    study_dir = Path(study_dir)
    res = analyse(study_dir, key_path, db_path, extractor, extractor_source, device, batch_size, exclude_raters)
    tier, per_prompt = res.pop("_tier"), res.pop("_per_prompt_metrics")
    out = Path(out or study_dir / "report")
    with atomic_directory(out) as tmp:
        (tmp / "results.json").write_text(json.dumps(res, indent=2, ensure_ascii=False, default=str) + "\n",
                                          encoding="utf-8")
        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(res["per_prompt"][0]) if res["per_prompt"] else ["prompt"])
        w.writeheader()
        w.writerows(res["per_prompt"])
        (tmp / "per_prompt.csv").write_text(buf.getvalue(), encoding="utf-8")
        figure_aspects(res["aspects"], res["aspect_labels"], tmp / "aspects.png")
        if res["metrics"] is not None:
            label = "FBD" if res["metrics"]["extractor"].get("name") == "biomedclip" else (
                f"FD ({res['metrics']['extractor'].get('name')})")
            figure_ranks_vs_metrics(tier, per_prompt, res["correlations"], res["models"], label, METRICS,
                                    tmp / "ranks_vs_metrics.png")
        (tmp / "summary.md").write_text(summary_markdown(res), encoding="utf-8")
    return out
