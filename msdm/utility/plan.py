"""The experiment plan: arms × real-data fractions × seeds, and which samples each training run sees.

Arms (all trained with the same classifier, the same real validation split and the same test set):

* ``real`` — the real training subset only (the baseline every difference is measured against);
* ``real+G×r`` — the real subset plus ``r`` times as many images from generator ``G``;
* ``G only`` — only ``G``'s images, as many as the real subset has (a like-for-like test of the images' value).

Sampling rules, chosen so that differences are *paired* and curves are *nested*:

* the real subset at fraction ``f`` is stratified (per class, or per label set for multi-label targets): each
  stratum's images are permuted once per seed and the first ``round(f·n)`` (at least one) are taken, so the 10 %
  subset is contained in the 25 % subset of the same seed;
* the validation split is carved from that subset (``val_fraction`` of each stratum, at least one image when the
  stratum has two): early stopping sees only real data the run owns, never the test set;
* every arm of one (fraction, seed) shares that subset and that validation split, so ``arm − real`` differences
  are paired by seed;
* synthetic images are drawn per stratum from the generator's pool, permuted once per seed (again nested across
  ratios). ``balance="real"`` gives each class ``r`` times its real count (the mixture keeps the real class
  prior, so a gain cannot come from rebalancing alone); ``balance="equal"`` spreads them evenly over classes.
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np

BALANCES = ("real", "equal")


@dataclass(frozen=True)
class Arm:
    name: str  # "real", "real+msdm×1", "msdm only"
    generator: str | None  # the generator's name; None for the real-only baseline
    ratio: float  # synthetic images per real training image (0 for real only; 1 for "G only", count-matched)
    use_real: bool  # whether the real training subset is part of the training set

    @property
    def slug(self) -> str:
        """A folder-safe name."""
        return re.sub(r"[^A-Za-z0-9._+-]+", "_", self.name.replace("×", "x")).strip("_")


def make_arms(generators: list[str], ratios: list[float], real: bool = True, mixed: bool = True,
              synthetic_only: bool = True) -> list[Arm]:
    arms = [Arm("real", None, 0.0, True)] if real else []
    for g in generators:
        if mixed:
            arms += [Arm(f"real+{g}×{r:g}", g, float(r), True) for r in ratios]
        if synthetic_only:
            arms.append(Arm(f"{g} only", g, 1.0, False))
    return arms


@dataclass(frozen=True)
class Run:
    fraction: float
    arm: Arm
    seed: int

    @property
    def key(self) -> str:
        return f"f{self.fraction:g}/{self.arm.slug}/seed{self.seed}"


@dataclass
class ExperimentPlan:
    fractions: list[float]
    seeds: list[int]
    arms: list[Arm]
    val_fraction: float = 0.2
    balance: str = "real"
    extra: dict = field(default_factory=dict)  # anything else that changes results (classifier, epochs, ...)

    def __post_init__(self):
        if not self.fractions or any(not 0 < f <= 1 for f in self.fractions):
            raise ValueError(f"real-data fractions must be in (0, 1], got {self.fractions}")
        if not self.seeds:
            raise ValueError("give at least one seed")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be in (0, 1), got {self.val_fraction}")
        if self.balance not in BALANCES:
            raise ValueError(f"balance must be one of {BALANCES}, got {self.balance!r}")
        if not any(a.generator is None for a in self.arms):
            raise ValueError("the plan needs the real-only arm: every difference is measured against it")

    def runs(self) -> list[Run]:
        """Fraction-major, then seed, then arm: the real-only run of a (fraction, seed) comes before the others."""
        return [Run(f, a, s) for f in self.fractions for s in self.seeds for a in self.arms]

    def to_json(self) -> dict:
        return {"fractions": self.fractions, "seeds": self.seeds, "arms": [asdict(a) for a in self.arms],
                "val_fraction": self.val_fraction, "balance": self.balance, **self.extra}


def _by_stratum(strata: list) -> dict:
    groups: dict = defaultdict(list)
    for i, s in enumerate(strata):
        groups[s].append(i)
    return dict(sorted(groups.items()))


def _perm(seed: int, purpose: int, stratum, n: int) -> np.ndarray:
    # One independent stream per (seed, purpose, stratum): a stratum's order does not depend on other strata.
    key = [int(x) for x in (stratum if isinstance(stratum, tuple) else (stratum,))]
    ss = np.random.SeedSequence([int(seed), purpose, len(key), *key])
    return np.random.default_rng(ss).permutation(n)


def split_real(strata: list, fraction: float, seed: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """(train indices, validation indices) of the real subset at ``fraction`` (module doc), both sorted."""
    train, val = [], []
    for s, idx in _by_stratum(strata).items():
        order = [idx[k] for k in _perm(seed, 0, s, len(idx))]
        n_sel = max(1, round(fraction * len(idx)))
        chosen = order[:n_sel]
        n_val = 0 if n_sel < 2 else min(n_sel - 1, max(1, round(val_fraction * n_sel)))
        val += chosen[:n_val]
        train += chosen[n_val:]
    return sorted(train), sorted(val)


def synthetic_counts(real_strata: list, train_idx: list[int], pool_strata: list, ratio: float,
                     balance: str) -> dict:
    """How many synthetic images of each stratum a run with ``ratio`` takes (module doc)."""
    if balance not in BALANCES:
        raise ValueError(f"balance must be one of {BALANCES}, got {balance!r}")
    real_counts: dict = defaultdict(int)
    for i in train_idx:
        real_counts[real_strata[i]] += 1
    if balance == "real":
        return {s: int(round(ratio * n)) for s, n in sorted(real_counts.items())}
    total = int(round(ratio * len(train_idx)))
    keys = sorted(set(pool_strata))
    base, rest = divmod(total, len(keys))
    return {s: base + (1 if k < rest else 0) for k, s in enumerate(keys)}


def pick_synthetic(pool_strata: list, counts: dict, seed: int, pool_name: str = "generator",
                   describe=str) -> list[int]:
    """Indices into the pool: the first ``counts[s]`` of stratum ``s`` in its per-seed order (sorted)."""
    by = _by_stratum(pool_strata)
    out, short = [], {}
    for s, n in counts.items():
        idx = by.get(s, [])
        if n > len(idx):
            short[describe(s)] = (len(idx), n)
            continue
        out += [idx[k] for k in _perm(seed, 1, s, len(idx))[:n]]
    if short:
        detail = ", ".join(f"{c!r}: has {h}, needs {n}" for c, (h, n) in short.items())
        need = max(n for _, n in short.values())
        raise ValueError(f"{pool_name} has too few images ({detail}): generate at least {need} per class "
                         f"(--num-per-class {need}), lower the ratios, or use --balance equal")
    return sorted(out)


def required_per_stratum(real_strata: list, plan: ExperimentPlan, pool_strata: list | None = None) -> int:
    """The most synthetic images any run of ``plan`` takes from one stratum (what ``--num-per-class`` defaults to)."""
    pool_strata = pool_strata if pool_strata is not None else sorted(set(real_strata))
    need = 0
    for f in plan.fractions:
        for s in plan.seeds:
            train, _ = split_real(real_strata, f, s, plan.val_fraction)
            for a in plan.arms:
                if a.generator is None:
                    continue
                ratio = a.ratio if a.use_real else 1.0
                counts = synthetic_counts(real_strata, train, pool_strata, ratio, plan.balance)
                need = max(need, max(counts.values(), default=0))
    return int(need)


def run_indices(run: Run, real_strata: list, pools_strata: dict[str, list], plan: ExperimentPlan,
                describe=str) -> dict:
    """``{"real_train": [...], "real_val": [...], "synthetic": [...]}`` for one run (indices into each source)."""
    train, val = split_real(real_strata, run.fraction, run.seed, plan.val_fraction)
    syn: list[int] = []
    if run.arm.generator is not None:
        pool = pools_strata[run.arm.generator]
        counts = synthetic_counts(real_strata, train, pool, run.arm.ratio, plan.balance)
        if plan.balance == "real":
            missing = [describe(s) for s in counts if s not in set(pool)]
            if missing:
                raise ValueError(f"generator {run.arm.generator!r} has no images of {missing}: add prompts for "
                                 f"them or use --balance equal")
        syn = pick_synthetic(pool, counts, run.seed, f"generator {run.arm.generator!r}", describe)
    return {"real_train": train if run.arm.use_real else [], "real_val": val, "synthetic": syn,
            "n_real": len(train) if run.arm.use_real else 0, "n_synthetic": len(syn),
            "n_real_subset": len(train)}
