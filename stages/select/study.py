"""Selection-study statistics: paired differences of exact match
between a selection method and the baseline (random) recovered at the same
budget and seed, with a bootstrap over seeds and eval records; and the
corrupted records a selection took against random's hypergeometric range.
Pure functions over arrays and dicts; `carp report` builds the study tables
from them (stages/evaluate/study.py).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

_SEED = re.compile(r"^s(\d+)$")
# a budget label: a plain decimal (float() would also read "2_4", the 2:4
# pattern's label, as 24)
_NUMBER = re.compile(r"^\d+(\.\d+)?$")


@dataclass(frozen=True)
class Variant:
    """A model's node name split into its stage, the other labels of its
    origin (world seed, pruning regime, a matrix value), budget and seed."""

    name: str
    method: str  # stage@other-labels
    budget: float | None
    seed: int | None
    stage: str = ""
    labels: tuple[str, ...] = ()


def parse_variant(name: str) -> Variant:
    """``rec_paser@s1-carp-0.1-s2`` -> stage ``rec_paser``, labels ``(s1,
    carp)``, method ``rec_paser@s1-carp``, budget 0.1, seed 2. The seed is the
    last label when it is ``s<int>`` (a ``seeds:`` sweep always labels last);
    the budget the last label that is a number; the rest stay in the method."""
    stage, _, label = name.partition("@")
    parts = label.split("-") if label else []
    seed = None
    if parts and _SEED.match(parts[-1]):
        seed = int(parts.pop()[1:])
    budget = None
    for i in range(len(parts) - 1, -1, -1):
        if _NUMBER.match(parts[i]):
            budget = float(parts.pop(i))
            break
    method = stage + ("@" + "-".join(parts) if parts else "")
    return Variant(name, method, budget, seed, stage, tuple(parts))


def paired_difference(
    method: Mapping[int, np.ndarray],
    base: Mapping[int, np.ndarray],
    families: Sequence[str],
    n_boot: int = 2000,
    seed: int = 0,
    keep_replicates: list[np.ndarray] | None = None,
) -> dict[str, tuple[float, float, float]]:
    """Mean EM difference method - baseline, overall (mean of family means)
    and per family, with 95% percentile intervals.

    ``method[s]`` and ``base[s]`` are 0/1 arrays over the same eval records
    (order given by ``families``) for training seed ``s``; only seeds both
    have count. Each bootstrap replicate resamples the seeds and, within each
    family, the records (the same records for every seed and both arms), so
    the interval holds training-seed and eval-sample variation. Returns
    ``{"mean": (diff, lo, hi), <family>: (...)}``; ``keep_replicates`` (a list)
    gets the overall difference's bootstrap replicates appended."""
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
    out = {
        k: (point[k], float(np.quantile(r, 0.025)), float(np.quantile(r, 0.975)))
        for k, r in reps.items()
    }
    if keep_replicates is not None:
        keep_replicates.append(reps["mean"])
    return out


def pooled_difference(
    cells: Sequence[tuple[float, np.ndarray]],
) -> tuple[float, float, float]:
    """The mean of independent cells' differences (e.g. a study's worlds and
    pruning regimes at one budget) with a 95% interval. ``cells``: each cell's
    point difference and its bootstrap replicates (same count for every cell);
    a pooled replicate is the mean of the cells' replicates of the same index,
    valid because every cell was resampled on its own (its seeds and records)."""
    if not cells:
        raise ValueError("pooled_difference: no cell")
    point = float(np.mean([p for p, _ in cells]))
    reps = np.mean(np.stack([r for _, r in cells]), axis=0)
    return point, float(np.quantile(reps, 0.025)), float(np.quantile(reps, 0.975))


def random_corrupted_range(
    pool: int, corrupted: int, selected: int
) -> tuple[float, int, int]:
    """Random selection of ``selected`` of ``pool`` records, ``corrupted`` of
    them bad: expected corrupted count and the 95% hypergeometric range."""
    from scipy.stats import hypergeom

    dist = hypergeom(pool, corrupted, selected)
    return float(dist.mean()), int(dist.ppf(0.025)), int(dist.ppf(0.975))
