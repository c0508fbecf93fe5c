"""Selection-study statistics (issue 12): paired differences of exact match
between a selection method and the baseline (random) recovered at the same
budget and seed, with a bootstrap over seeds and eval records; and the
corrupted records a selection took against random's hypergeometric range.
Pure functions over arrays and dicts; the CLI is benchmarks/select_study.py.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_SEED = re.compile(r"^s(\d+)$")


@dataclass(frozen=True)
class Variant:
    """A recovered model's name split into method, budget and seed."""

    name: str
    method: str
    budget: float | None
    seed: int | None


def parse_variant(name: str) -> Variant:
    """``rec_paser@carp-0.1-s2`` -> method ``rec_paser@carp``, budget 0.1,
    seed 2 (labels that are neither a number nor ``s<int>`` stay in the
    method)."""
    stage, _, label = name.partition("@")
    rest, budget, seed = [], None, None
    for part in label.split("-") if label else []:
        m = _SEED.match(part)
        if m:
            seed = int(m.group(1))
            continue
        try:
            budget = float(part)
            continue
        except ValueError:
            rest.append(part)
    method = stage + ("@" + "-".join(rest) if rest else "")
    return Variant(name, method, budget, seed)


def paired_difference(
    method: Mapping[int, np.ndarray],
    base: Mapping[int, np.ndarray],
    families: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, tuple[float, float, float]]:
    """Mean EM difference method - baseline, overall (mean of family means)
    and per family, with 95% percentile intervals.

    ``method[s]`` and ``base[s]`` are 0/1 arrays over the same eval records
    (order given by ``families``) for training seed ``s``; only seeds both
    have count. Each bootstrap replicate resamples the seeds and, within each
    family, the records (the same records for every seed and both arms), so
    the interval holds training-seed and eval-sample variation. Returns
    ``{"mean": (diff, lo, hi), <family>: (...)}``."""
    seeds = sorted(set(method) & set(base))
    if not seeds:
        raise ValueError("paired_difference: no seed in common with the baseline")
    fam = np.asarray(families)
    d = np.stack([method[s] - base[s] for s in seeds]).astype(np.float64)  # (S, R)
    names = sorted(set(fam.tolist()))
    idx = {f: np.flatnonzero(fam == f) for f in names}
    rng = np.random.default_rng(seed)

    def stats(dd: np.ndarray, pick: dict[str, np.ndarray]) -> dict[str, float]:
        per = {f: float(dd[:, pick[f]].mean()) for f in names}
        return {"mean": float(np.mean(list(per.values()))), **per}

    point = stats(d, idx)
    reps = {k: np.empty(n_boot) for k in point}
    for b in range(n_boot):
        ds = d[rng.integers(0, len(seeds), len(seeds))]
        pick = {f: rng.choice(i, len(i)) for f, i in idx.items()}
        for k, v in stats(ds, pick).items():
            reps[k][b] = v
    return {
        k: (point[k], float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975)))
        for k, r in reps.items()
    }


def random_corrupted_range(
    pool: int, corrupted: int, selected: int
) -> tuple[float, int, int]:
    """Random selection of ``selected`` of ``pool`` records, ``corrupted`` of
    them bad: expected corrupted count and the 95% hypergeometric range."""
    from scipy.stats import hypergeom

    dist = hypergeom(pool, corrupted, selected)
    return float(dist.mean()), int(dist.ppf(0.025)), int(dist.ppf(0.975))
