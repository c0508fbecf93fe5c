"""Budget arithmetic: fraction or count -> record count, and PASER's
degradation-aware allocation of a budget over clusters (He et al., 2025, §CDAIS).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def check_budget(v: Any) -> Any:
    """Validate a ``budget`` value: a fraction in (0, 1] or an integer count >= 1."""
    if v is None:
        return None
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ValueError(
            f"budget: got {v!r}; give a fraction in (0, 1] such as 0.2 or a "
            "record count such as 2000"
        )
    if isinstance(v, int):
        if v < 1:
            raise ValueError(f"budget: a count must be >= 1, got {v}")
        return v
    if not math.isfinite(v) or not 0.0 < v <= 1.0:
        raise ValueError(
            f"budget: a fraction must be in (0, 1], got {v}; for a record count "
            "write an integer without a decimal point (e.g. 2000)"
        )
    return float(v)


def resolve_budget(budget: float | int | None, pool_size: int, pool: str = "") -> int:
    """Number of records to select from a pool of ``pool_size`` (None = all).

    A fraction f gives floor(f * N) (at least 1); a count larger than the pool
    is an error rather than a silent clamp.
    """
    if budget is None:
        return pool_size
    if isinstance(budget, float):
        return max(1, math.floor(budget * pool_size + 1e-9))
    if budget > pool_size:
        raise ValueError(
            f"budget: {budget} records exceeds the {pool_size} records of pool "
            f"'{pool}'; use a smaller count or a fraction such as 0.2"
        )
    return budget


def allocate(budget: int, weights: Sequence[float], sizes: Sequence[int]) -> list[int]:
    """Split ``budget`` over clusters proportionally to ``weights``, capped by
    ``sizes``.

    n_k = floor(B * w_k / sum(w)) first (the paper's rule). Then what is left
    (the rounding remainder plus whatever the caps freed) is handed out again
    in proportion to the weights of the clusters that still have room, and the
    last few units one at a time in decreasing weight (ties: lower index), so
    that sum(n_k) == min(B, sum(sizes)) and n_k <= size_k. The public PASER
    code drops the remainder; we redistribute it. Zero total weight (no
    measured degradation anywhere) falls back to uniform weights.
    """
    k = len(weights)
    if k != len(sizes):
        raise ValueError("allocate: weights and sizes must have the same length")
    if any(w < 0 or not math.isfinite(w) for w in weights):
        raise ValueError(f"allocate: weights must be finite and >= 0, got {weights}")
    target = min(budget, sum(sizes))
    w = [float(x) for x in weights]
    if sum(w) <= 0:
        w = [1.0] * k
    alloc = [0] * k
    left = target
    while left > 0:
        open_ = [i for i in range(k) if alloc[i] < sizes[i]]
        total = sum(w[i] for i in open_)
        if total <= 0:  # only zero-weight clusters have room: share uniformly
            w = [1.0 if i in open_ else w[i] for i in range(k)]
            total = float(len(open_))
        given = 0
        for i in open_:
            add = min(math.floor(left * w[i] / total + 1e-12), sizes[i] - alloc[i])
            alloc[i] += add
            given += add
        left -= given
        if given == 0:  # remainder smaller than every proportional share
            for i in sorted(open_, key=lambda j: (-w[j], j)):
                if left == 0:
                    break
                if alloc[i] < sizes[i]:
                    alloc[i] += 1
                    left -= 1
    return alloc
