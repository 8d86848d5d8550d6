"""The MEDVQA-GI image-generation scores (Fidelity, Agreement, Diversity, FBD) from BiomedCLIP features.

These are the four metrics of Prompt to Polyp Table 2–3, computed exactly as the challenge's metric script does
(``SushantGautam/MedVQA``, ``medvqa/submission_samples/gi-2025/submission_task2.py``; identical for 2026), but from
feature arrays grouped by prompt and without a d×d ``sqrtm`` per prompt (see :mod:`msdm.metrics.realism.frechet`).

The reference, in short:

* generated images ``prompt{p:04d}_img{i:04d}.png`` (p, i 1-based), 10 per prompt; prompts come in pairs
  (original, rephrased) in file order, so pairs are (1, 2), (3, 4), …;
* features: BiomedCLIP image CLS token, 768-d, **raw** for the Fréchet distances, **L2-normalised** for Agreement
  and Diversity (the script's ``normalize(features, axis=1)`` inside ``diversity_score``/``mean_cosine_sim``). The
  script keeps float32 features and normalises them in float32; everything here is float64 (differences ~1e-8);
* per pair (A, B), with ``real`` the features of the real images that ``real_mapping[str(A)]`` lists:
  Agreement = mean cosine similarity over all |A|×|B| cross pairs; Diversity = mean pairwise Euclidean distance
  (``pdist``) within A and within B; ``fid_pair = (FD(A, real) + FD(B, real)) / 2``;
* scores: Fidelity = mean over pairs of ``1000 / (1 + fid_pair)``; Agreement = mean over pairs; Diversity = mean
  over prompts; FBD = FD(all generated features of the scored pairs, the real features stacked once per pair).

**Quirk** — the script builds pairs with ``for i in range(0, len(sorted_prompts)//2, 2)``, which scores only the
first half of the prompts. ``reference_compatible=True`` reproduces that; the default scores all pairs.

**One real image** — ``np.cov`` of a single row is NaN, so the script yields a NaN Fidelity (older SciPy) or dies in
``sqrtm`` ("Internal error", SciPy 1.17).
``single_real="error"`` (default) raises a clear error; ``"zero-covariance"`` treats one image as a point mass
(Σ = 0, so FD = ‖μ_gen − x‖² + tr Σ_gen), the limit of the formula, documented and tested; ``"nan"`` mimics the
script.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import numpy as np
from scipy.spatial.distance import pdist

from msdm.errors import InputError, InputKeyError
from msdm.metrics.realism.frechet import as_float64, frechet_distance

__all__ = [
    "FIDELITY_SCALE",
    "l2_normalize",
    "agreement",
    "diversity",
    "fidelity_from_fid",
    "fid_to_real",
    "challenge_pairs",
    "real_features_by_prompt",
    "per_prompt_metrics",
    "challenge_scores",
    "round_scores",
]

# ``fidelity_norm = np.mean(1000 / (1 + np.array(fids)))`` in the current challenge script (an earlier revision
# used 100; Prompt to Polyp Table 2 reports values like 0.36, consistent with 1000 and raw 768-d features).
FIDELITY_SCALE = 1000.0

SINGLE_REAL_MODES = ("error", "zero-covariance", "nan")


# ----------------------------------------------------------------------------------------------------------------
# Building blocks (also used per prompt by the expert-evaluation kit)
# ----------------------------------------------------------------------------------------------------------------


def l2_normalize(feats) -> np.ndarray:
    """Rows divided by their L2 norm, in float64 (``sklearn.preprocessing.normalize(x, axis=1)``; zero rows stay 0)."""
    f = as_float64(feats)
    norms = np.linalg.norm(f, axis=1, keepdims=True)
    return f / np.where(norms == 0, 1.0, norms)


def agreement(feats_a, feats_b) -> float:
    """Mean cosine similarity over all cross pairs of two feature sets (the script's ``mean_cosine_sim``).

    The mean of âᵢ·b̂ⱼ over all (i, j) equals (mean âᵢ)·(mean b̂ⱼ), so it costs O((n + m)·d), not O(n·m·d).
    """
    a, b = l2_normalize(feats_a), l2_normalize(feats_b)
    return float(a.mean(axis=0) @ b.mean(axis=0))


def diversity(feats) -> float:
    """Mean pairwise Euclidean distance between L2-normalised features of one prompt (the script's
    ``diversity_score``: ``pdist(normalize(features)).mean()``). Needs at least 2 images."""
    f = l2_normalize(feats)
    if f.shape[0] < 2:
        raise InputError(f"diversity needs at least 2 images of a prompt, got {f.shape[0]}")
    return float(pdist(f).mean())


def fidelity_from_fid(fid) -> float:
    """Map a (per-prompt or per-pair) Fréchet distance to the challenge's Fidelity: ``1000 / (1 + fid)``."""
    return float(FIDELITY_SCALE / (1.0 + float(fid)))


def fid_to_real(gen_feats, real_feats, single_real: str = "error", what: str = "prompt") -> float:
    """Fréchet distance of one prompt's generated features to its real features, raw (not normalised).

    ``single_real`` says what to do with a single real image (see the module docstring).
    """
    g, r = as_float64(gen_feats), as_float64(real_feats)
    if single_real not in SINGLE_REAL_MODES:
        raise ValueError(f"single_real must be one of {SINGLE_REAL_MODES}, got {single_real!r}")
    if r.ndim != 2 or r.shape[0] == 0:
        raise InputError(f"{what}: no real images to compare with")
    if r.shape[0] == 1:
        if single_real == "error":
            raise InputError(
                f"{what}: only one real image is mapped to it, so its covariance (np.cov, ddof 1) is undefined "
                "and the reference script would give NaN. Map at least 2 real images, or choose "
                "single_real='zero-covariance' (treat it as a point: FD = |mu_gen - x|^2 + tr Sigma_gen) or 'nan'."
            )
        if single_real == "nan":
            return float("nan")
        mu = g.mean(axis=0)
        xc = g - mu
        diff = mu - r[0]
        return float(diff @ diff) + float(np.einsum("ij,ij->", xc, xc)) / (g.shape[0] - 1)
    return frechet_distance(g, r)


def challenge_pairs(prompt_ids: Iterable[int], reference_compatible: bool = False) -> list[tuple[int, int]]:
    """Pair prompts as the script does: sort the ids, then (s[0], s[1]), (s[2], s[3]), ….

    With ``reference_compatible`` the loop is the script's ``range(0, len(s)//2, 2)`` (only the first half of the
    prompts, rounded as that loop rounds); otherwise every pair is scored and an odd count is an error.
    """
    s = sorted(int(p) for p in prompt_ids)
    if reference_compatible:
        return [(s[i], s[i + 1]) for i in range(0, len(s) // 2, 2)]
    if len(s) % 2:
        raise InputError(f"{len(s)} prompts cannot form (original, rephrased) pairs: the count must be even")
    return [(s[i], s[i + 1]) for i in range(0, len(s), 2)]


def real_features_by_prompt(
    real_feats_by_id: Mapping[str, np.ndarray],
    real_mapping: Mapping[str, Sequence[str]],
    prompt_ids: Iterable[int],
) -> dict[int, np.ndarray]:
    """Stack the real features each prompt is compared with: ``real_mapping[str(p)]`` lists real image ids.

    Prompts absent from the mapping are left out (a pair's real set is looked up by its first prompt only, as in
    the script, so B-prompts need no entry). Ids are used as given; a repeated id contributes a repeated row.
    """
    out = {}
    for p in prompt_ids:
        ids = real_mapping.get(str(p))
        if ids is None:
            continue
        missing = [i for i in ids if str(i) not in real_feats_by_id]
        if missing:
            raise InputKeyError(f"prompt {p}: real image id(s) {missing[:5]} not found among the real images "
                                f"(real_mapping ids must be real image file stems or dataset ids)")
        out[int(p)] = np.stack([as_float64(real_feats_by_id[str(i)]) for i in ids]) if ids else np.zeros((0, 0))
    return out


# ----------------------------------------------------------------------------------------------------------------
# Per prompt and global scores
# ----------------------------------------------------------------------------------------------------------------


def per_prompt_metrics(
    gen_feats_by_prompt: Mapping[int, np.ndarray],
    real_feats_by_prompt: Mapping[int, np.ndarray],
    pairs: Sequence[tuple[int, int]] | None = None,
    single_real: str = "error",
) -> dict[int, dict]:
    """Metrics of each prompt on its own: ``{prompt: {"fbd", "fidelity", "diversity", "num_images", "pair",
    "agreement"}}``.

    * ``fbd``: FD(prompt's generated features, its real features) — raw features; ``fidelity`` = 1000/(1 + fbd);
      both ``None`` when the prompt has no real features in ``real_feats_by_prompt``;
    * ``diversity``: mean pairwise distance of the prompt's L2-normalised features;
    * ``pair``/``agreement``: the partner prompt and the pair's Agreement when ``pairs`` lists the prompt.

    In the challenge a B prompt is compared with the real images of its A prompt: pass
    ``real_feats_by_prompt={b: real[a], ...}`` (or use :func:`challenge_scores`, which does it) to reproduce that.
    """
    partner: dict[int, int] = {}
    pair_agreement: dict[int, float] = {}
    for a, b in pairs or ():
        ag = agreement(gen_feats_by_prompt[a], gen_feats_by_prompt[b])
        partner[a], partner[b] = b, a
        pair_agreement[a] = pair_agreement[b] = ag
    out = {}
    for p in sorted(gen_feats_by_prompt):
        g = gen_feats_by_prompt[p]
        real = real_feats_by_prompt.get(p)
        fbd = None if real is None else fid_to_real(g, real, single_real, what=f"prompt {p}")
        out[int(p)] = {
            "num_images": int(len(g)),
            "fbd": fbd,
            "fidelity": None if fbd is None else fidelity_from_fid(fbd),
            "diversity": diversity(g),
            "pair": partner.get(p),
            "agreement": pair_agreement.get(p),
        }
    return out


def challenge_scores(
    gen_feats_by_prompt: Mapping[int, np.ndarray],
    real_feats_by_prompt: Mapping[int, np.ndarray],
    reference_compatible: bool = False,
    single_real: str = "error",
    pairs: Sequence[tuple[int, int]] | None = None,
) -> dict:
    """The four challenge scores (and the per-pair table) from features grouped by prompt.

    ``gen_feats_by_prompt``: ``{prompt index: [num_images, d]}`` raw BiomedCLIP features (indices as in the file
    names, 1-based). ``real_feats_by_prompt``: ``{A prompt index: [num_real, d]}`` (see
    :func:`real_features_by_prompt`); only the A prompt of each pair needs an entry, as in the script.
    ``pairs`` overrides :func:`challenge_pairs`.

    Returns ``{"fidelity", "agreement", "diversity", "FBD", "num_pairs", "num_prompts", "reference_compatible",
    "pairs": [per-pair dicts with the script's columns]}``; values are unrounded floats (see :func:`round_scores`).
    """
    if pairs is None:
        pairs = challenge_pairs(gen_feats_by_prompt.keys(), reference_compatible)
    if not pairs:
        raise InputError("no prompt pairs to score (need at least 2 prompts, or 4 with reference_compatible)")
    per_pair, fids, agreements, diversities = [], [], [], []
    all_generated, all_real = [], []
    for a, b in pairs:
        feats_a, feats_b = as_float64(gen_feats_by_prompt[a]), as_float64(gen_feats_by_prompt[b])
        if a not in real_feats_by_prompt:
            raise InputKeyError(f"no real images mapped to prompt {a} (real_mapping[{str(a)!r}] is missing)")
        real = as_float64(real_feats_by_prompt[a])  # "Shared real reference for both prompts" (the script)
        sim_ab = agreement(feats_a, feats_b)
        div_a, div_b = diversity(feats_a), diversity(feats_b)
        fid_a = fid_to_real(feats_a, real, single_real, what=f"prompt {a}")
        fid_b = fid_to_real(feats_b, real, single_real, what=f"prompt {b} (real images of prompt {a})")
        fid_pair = (fid_a + fid_b) / 2
        fids.append(fid_pair)
        agreements.append(sim_ab)
        diversities.extend([div_a, div_b])
        all_generated.extend([feats_a, feats_b])
        all_real.append(real)
        per_pair.append({
            "prompt_a": int(a), "prompt_b": int(b),
            "fid_ab": frechet_distance(feats_a, feats_b),  # the script's "FID(A,B)" column (not in the scores)
            "agreement": sim_ab, "diversity_a": div_a, "diversity_b": div_b,
            "fid_a_real": fid_a, "fid_b_real": fid_b, "num_real": int(real.shape[0]),
        })
    fidelity = float(np.mean([fidelity_from_fid(f) for f in fids]))  # np.mean(1000 / (1 + np.array(fids)))
    fbd = frechet_distance(np.concatenate(all_generated), np.concatenate(all_real))
    return {
        "fidelity": fidelity,
        "agreement": float(np.mean(agreements)),
        "diversity": float(np.mean(diversities)),
        "FBD": fbd,
        "num_pairs": len(pairs),
        "num_prompts": 2 * len(pairs),
        "reference_compatible": bool(reference_compatible),
        "pairs": per_pair,
    }


def round_scores(scores: Mapping, ndigits: int = 2) -> dict:
    """The scores as the challenge displays them: ``round(float(x), 2)`` for fidelity/agreement/diversity/FBD(/FID)."""
    return {k: round(float(scores[k]), ndigits) for k in ("fidelity", "agreement", "diversity", "FBD", "FID")
            if k in scores and scores[k] is not None}
