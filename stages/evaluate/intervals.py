"""Confidence intervals for evaluation metrics (pure functions, numpy/scipy).

Following "Quantifying Variance in Evaluation Benchmarks" (Madaan et al. 2024):
a per-family accuracy gets a Wilson score interval (``scipy.stats.binomtest``);
a mean over families gets a percentile bootstrap stratified by family (records
are resampled within each family, so every family keeps its size); a comparison
of two models on the same records is a *paired* bootstrap of the per-record
differences (again stratified by family), so the record-to-record difficulty
the models share cancels out. A difference whose interval contains 0 is not
significant. Every bootstrap is seeded: the same inputs give the same bounds.
McNemar's test (exact binomial on the discordant pairs, mid-p; Fagerland et al.
2013) is the alternative paired test for 0/1 outcomes such as exact match.
"""

from __future__ import annotations

import warnings
import zlib
from collections.abc import Sequence

import numpy as np

CONFIDENCE = 0.95
N_RESAMPLES = 2000


def wilson(k: int, n: int, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Wilson score interval of a proportion ``k / n``; (nan, nan) when n is 0."""
    from scipy.stats import binomtest

    if n == 0:
        return float("nan"), float("nan")
    ci = binomtest(int(k), int(n)).proportion_ci(confidence, method="wilson")
    return float(ci.low), float(ci.high)


def rng_seed(seed: int, *keys: str) -> list[int]:
    """A numpy seed sequence from the stage seed and names (model, metric), so
    one comparison's bounds do not depend on which others were computed."""
    return [int(seed), *(zlib.crc32(k.encode()) for k in keys)]


def _mean_of_means(*strata: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean([s.mean(axis=axis) for s in strata], axis=0)


def stratified_bootstrap(
    strata: Sequence[Sequence[float]],
    seed: int | list[int] = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the unweighted mean of the strata means.

    Each stratum (a family's per-record values: hits, or paired differences) is
    resampled with replacement on its own (``scipy.stats.bootstrap`` with one
    sample per stratum). One stratum is the plain bootstrap of a mean.
    """
    from scipy.stats import bootstrap

    # a one-record stratum resamples to itself; scipy wants two observations
    data = [np.asarray(s if len(s) > 1 else [*s, *s], float) for s in strata if len(s)]
    if not data:
        return float("nan"), float("nan")
    point = float(_mean_of_means(*data))
    if all(np.all(s == s[0]) for s in data):  # nothing varies: no spread
        return point, point
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # degenerate strata (all 0 / all 1)
        res = bootstrap(
            tuple(data),
            _mean_of_means,
            n_resamples=n_resamples,
            confidence_level=confidence,
            method="percentile",
            vectorized=True,
            rng=np.random.default_rng(seed),
        )
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


TRANSFORMS = {"exp": np.exp, "bits": lambda x: x / np.log(2), "identity": lambda x: x}


def ratio_bootstrap(
    nums: Sequence[Sequence[float]],
    dens: Sequence[Sequence[float]],
    transform: str = "exp",
    seed: int | list[int] = 0,
    confidence: float = CONFIDENCE,
    n_resamples: int = N_RESAMPLES,
) -> tuple[float, float]:
    """Percentile bootstrap of ``f(sum(num) / sum(den))`` over records, where
    ``nums[m]`` / ``dens[m]`` are model m's per-record values on the same
    records (resampled together: paired). One model: its interval (perplexity
    = exp(NLL sum / token sum); ``bits``: NLL sum / byte sum / ln 2); two
    models: of ``f(b) - f(a)``."""
    num = np.asarray(nums, dtype=np.float64)  # (M, R)
    den = np.asarray(dens, dtype=np.float64)
    f = TRANSFORMS[transform]
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, num.shape[1], size=(n_resamples, num.shape[1]))  # (B, R)
    vals = f(num[:, idx].sum(-1) / den[:, idx].sum(-1))  # (M, B)
    stat = vals[0] if len(vals) == 1 else vals[1] - vals[0]
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(stat, [alpha, 1 - alpha])
    return float(lo), float(hi)


def significant(lo: float, hi: float) -> bool:
    """True when the interval of a difference excludes 0."""
    return bool(lo > 0 or hi < 0)


def mcnemar_midp(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided mid-p McNemar test of paired 0/1 outcomes ``a`` and ``b``:
    the exact binomial p on the discordant pairs (n01 of n01 + n10 under p=1/2)
    minus the probability of the observed count; 1.0 when none are discordant."""
    from scipy.stats import binom

    n01 = sum(1 for x, y in zip(a, b, strict=True) if x < y)
    n10 = sum(1 for x, y in zip(a, b, strict=True) if x > y)
    n, k = n01 + n10, min(n01, n10)
    if n == 0:
        return 1.0
    return float(min(1.0, 2 * binom.cdf(k, n, 0.5) - binom.pmf(k, n, 0.5)))
