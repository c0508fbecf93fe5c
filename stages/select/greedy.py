"""PASER's within-cluster greedy fill (He et al., arXiv 2502.12594, Alg. 1):
scan each cluster's IES ranking, skip what the concept filter rejects, and
hand budget a cluster cannot use to the clusters that still have candidates.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from stages.select.budget import allocate


@dataclass
class Fill:
    """Outcome of :func:`fill`: selection order and per-cluster accounting."""

    selected: list[int]
    taken: list[int]
    rejected: list[int]
    quota: list[int]
    rejected_ids: list[int] = field(default_factory=list)


def fill(
    ranked: Sequence[Sequence[int]],
    alloc: Sequence[int],
    weights: Sequence[float],
    accept: Callable[[int], bool] | None = None,
) -> Fill:
    """Take ``alloc[c]`` items from each ranking ``ranked[c]`` (best first).

    Clusters are scanned in decreasing weight (CDS; ties by index) so that the
    most degraded capabilities fill first under the shared concept graph. A
    rejected item (``accept`` returns False) is skipped and the scan goes on.
    When a cluster runs out of candidates short of its quota, the shortfall is
    re-allocated with :func:`allocate` over the clusters that still have
    unscanned candidates (weights as given), until the budget is met or every
    ranking is exhausted. ``quota`` is each cluster's final allocation.
    """
    k = len(ranked)
    order = sorted(range(k), key=lambda c: (-weights[c], c))
    pos = [0] * k
    taken = [0] * k
    rejected = [0] * k
    quota = list(alloc)
    selected: list[int] = []
    rejected_ids: list[int] = []
    while True:
        for c in order:
            while taken[c] < quota[c] and pos[c] < len(ranked[c]):
                i = ranked[c][pos[c]]
                pos[c] += 1
                if accept is None or accept(i):
                    selected.append(i)
                    taken[c] += 1
                else:
                    rejected[c] += 1
                    rejected_ids.append(i)
        short = sum(quota) - sum(taken)
        room = [len(ranked[c]) - pos[c] for c in range(k)]
        if short <= 0 or sum(room) == 0:
            break
        # clusters that met their quota keep it; the shortfall goes where
        # candidates remain (the exhausted clusters' quota shrinks to what they took)
        open_w = [w if r else 0.0 for w, r in zip(weights, room, strict=True)]
        extra = allocate(short, open_w, room)
        quota = [taken[c] + extra[c] if room[c] else taken[c] for c in range(k)]
    return Fill(selected, taken, rejected, quota, rejected_ids)
