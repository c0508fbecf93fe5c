"""carp's options for PASER (stages/select/paser.py, ``mode: carp``): a
degradation score aligned with capability damage (the pruned-vs-original loss
increase on the reference answer), cluster weights that count damage mass
rather than its mean, and a noise flag for records the *original* model finds
implausible relative to their cluster (robust z-score of its answer loss,
median / MAD). Pure numpy functions; no I/O.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

MAD_TO_SD = 1.4826  # MAD of a normal sample times this estimates its sigma
MEAN_AD_TO_SD = 1.2533  # sqrt(pi/2): the same for the mean absolute deviation


def degradation(kind: str, pair: np.ndarray) -> np.ndarray:
    """Per-record damage from the paired scores (N, 3) = (JSD, NLL original,
    NLL pruned): ``jsd`` (PASER) or ``loss_increase`` = max(0, NLL pruned -
    NLL original) on the reference answer (a record the pruned model still
    answers as well as the original scores 0)."""
    pair = np.asarray(pair, dtype=np.float64)
    if kind == "jsd":
        return pair[:, 0]
    if kind == "loss_increase":
        return np.maximum(pair[:, 2] - pair[:, 1], 0.0)
    raise ValueError(f"degradation: unknown score '{kind}' (jsd, loss_increase)")


def robust_z(values: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """(x - median_c) / (1.4826 · MAD_c) within each cluster c of ``labels``.

    A cluster whose MAD is 0 (more than half its values equal) uses the mean
    absolute deviation from the median instead (times 1.2533); a cluster whose
    values are all equal gets z = 0."""
    x = np.asarray(values, dtype=np.float64)
    z = np.zeros_like(x)
    for c in np.unique(labels):
        m = labels == c
        v = x[m]
        med = np.median(v)
        dev = np.abs(v - med)
        scale = MAD_TO_SD * np.median(dev)
        if scale <= 0:
            scale = MEAN_AD_TO_SD * dev.mean()
        z[m] = (v - med) / scale if scale > 0 else 0.0
    return z


def implausible(nll_ref: np.ndarray, labels: np.ndarray, z_max: float) -> np.ndarray:
    """Bool (N,): records whose answer loss under the original model lies more
    than ``z_max`` robust standard deviations above their cluster's median
    (likely wrong answers; only the high side is flagged)."""
    return robust_z(nll_ref, labels) > z_max


def cluster_weights(
    rule: str, scores: np.ndarray, members: Sequence[np.ndarray]
) -> list[float]:
    """Allocation weight per cluster: ``cds`` = mean score (PASER's CDS_k),
    ``mass`` = summed score (|C_k| · CDS_k: the cluster's total damage),
    ``uniform`` = 1. Empty clusters weigh 0 (nothing to select there)."""
    if rule == "uniform":
        return [1.0 if len(m) else 0.0 for m in members]
    if rule not in ("cds", "mass"):
        raise ValueError(f"allocation: unknown rule '{rule}' (cds, mass, uniform)")
    agg = np.mean if rule == "cds" else np.sum
    return [float(agg(scores[m])) if len(m) else 0.0 for m in members]


def with_coverage(
    weights: Sequence[float], sizes: Sequence[int], coverage: float
) -> list[float]:
    """Blend allocation weights with cluster sizes: a share ``coverage`` of the
    budget follows |C_k| (what a stratified random sample gives every cluster),
    the rest the weights. Both parts are normalised first, so ``coverage`` is
    the budget share itself; 0 returns the weights unchanged (and no weight at
    all falls back to sizes alone)."""
    if not 0.0 <= coverage <= 1.0:
        raise ValueError(f"coverage: must be in [0, 1], got {coverage}")
    w = np.asarray(weights, dtype=np.float64)
    n = np.asarray(sizes, dtype=np.float64)
    if coverage == 0.0:
        return [float(x) for x in w]
    wn = w / w.sum() if w.sum() > 0 else n / max(n.sum(), 1.0)
    nn = n / n.sum() if n.sum() > 0 else wn
    return [float(x) for x in (1.0 - coverage) * wn + coverage * nn]


def within_order(
    members: np.ndarray, score: np.ndarray, flags: np.ndarray, rule: str, seed: int
) -> list[int]:
    """One cluster's ranking, flagged records last: ``ies`` = highest IES first
    (PASER; ties by index) or ``random`` = a seeded permutation (the cluster
    quota then draws a stratified random sample)."""
    if rule == "ies":
        return members[np.lexsort((members, -score[members], flags[members]))].tolist()
    if rule == "random":
        rng = np.random.default_rng([seed, int(members[0]) if len(members) else 0])
        perm = members[rng.permutation(len(members))]
        return perm[np.argsort(flags[perm], kind="stable")].tolist()
    raise ValueError(f"within: unknown order '{rule}' (ies, random)")
