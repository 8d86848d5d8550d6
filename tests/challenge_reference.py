"""The MEDVQA-GI challenge's metric script, copied literally with only its file I/O replaced by arrays.

Source: ``SushantGautam/MedVQA``, ``medvqa/submission_samples/gi-2025/submission_task2.py`` (unchanged for 2026).
It is the independent reference that ``msdm.metrics.realism.challenge`` is checked against (tests/test_metrics_challenge.py,
tests/test_metrics_evaluate.py) and timed against (bench/metrics_speed.py), so it stays as the script wrote it:
scipy ``sqrtm`` per pair, sklearn normalisation in the features' own dtype.
"""

import warnings

import numpy as np
import scipy.linalg
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import cosine_similarity
from sklearn.preprocessing import normalize


def fid_score(feat1, feat2):
    mu1, mu2 = feat1.mean(0), feat2.mean(0)
    sigma1, sigma2 = np.cov(feat1, rowvar=False), np.cov(feat2, rowvar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sqrtm: "Matrix is singular and may not have a square root"
        covmean = scipy.linalg.sqrtm(sigma1 @ sigma2).real
    return ((mu1 - mu2) ** 2).sum() + np.trace(sigma1 + sigma2 - 2 * covmean)


def diversity_score(features):
    features = normalize(features, axis=1)
    return pdist(features).mean()


def mean_cosine_sim(feat1, feat2):
    feat1 = normalize(feat1, axis=1)
    feat2 = normalize(feat2, axis=1)
    return cosine_similarity(feat1, feat2).mean()


def reference_scores(all_features, real_features_cache, prompt_to_real, half=True, num_pairs=None):
    """The script's scoring loop; returns ``(scores, number of pairs scored)``.

    ``half=True`` is the script as published: ``range(0, len(sorted_prompts) // 2, 2)`` scores only the first half
    of the prompts. ``half=False`` is the same loop over every prompt. ``num_pairs`` keeps only the first pairs
    (the benchmark times the reference on a few).
    """
    sorted_prompts = sorted(all_features.keys())
    objectives = []
    for i in range(0, len(sorted_prompts) // 2 if half else len(sorted_prompts), 2):
        idx_A = sorted_prompts[i]
        idx_B = sorted_prompts[i + 1]
        A = all_features[idx_A]
        B = all_features[idx_B]
        objectives.append((idx_A, idx_B, A, B))
    if num_pairs is not None:
        objectives = objectives[:num_pairs]

    fids, agreements, diversities = [], [], []
    all_generated, all_real = [], []
    for idx_A, _idx_B, A, B in objectives:
        sim_ab = mean_cosine_sim(A, B)
        fid_score(A, B)  # the script's "FID(A,B)" column: part of its cost, in no score
        div_A = diversity_score(A)
        div_B = diversity_score(B)
        real_keys = prompt_to_real[str(idx_A)]
        real_feats = np.array([real_features_cache[key] for key in real_keys])
        fid_A_real = fid_score(A, real_feats)
        fid_B_real = fid_score(B, real_feats)
        all_generated.extend([*A, *B])
        all_real.extend(real_feats)
        fids.append((fid_A_real + fid_B_real) / 2)
        agreements.append(sim_ab)
        diversities.extend([div_A, div_B])

    all_generated = np.array(all_generated)
    all_real = np.array(all_real)
    global_fid = fid_score(all_generated, all_real)
    fidelity_norm = np.mean(1000 / (1 + np.array(fids)))
    agreement_norm = np.mean(agreements)
    diversity_norm = np.mean(diversities)
    return {"fidelity": float(fidelity_norm), "agreement": float(agreement_norm),
            "diversity": float(diversity_norm), "FBD": float(global_fid)}, len(objectives)
