"""Pure schedules of a training run: learning rate per step and which examples
each rank sees at each step.

The data is an endless concatenation of seeded epoch permutations; optimizer
step ``s`` consumes positions ``[s*G, (s+1)*G)`` of it, where ``G`` is the
global batch (micro_batch * grad_accum * world_size). The global batch is cut
into ``grad_accum * world_size`` micro-batches in order and rank ``r`` takes
micro-batches ``r*grad_accum .. (r+1)*grad_accum - 1``. The averaged gradient
therefore depends only on ``G`` and ``micro_batch``, not on how the work is
split across ranks, and resuming needs nothing but the step number.
"""

from __future__ import annotations

import math
from functools import lru_cache


def lr_factor(step: int, total: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate at optimizer step ``step`` (0-based).

    Linear warmup over ``warmup_steps``, then constant, linear or cosine decay
    to zero at ``total`` (Loshchilov & Hutter 2017 for cosine).
    """
    if warmup_steps > 0 and step < warmup_steps:
        return (step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup_steps)
    progress = min(1.0, (step - warmup_steps) / span)
    if schedule == "linear":
        return 1.0 - progress
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    raise ValueError(f"schedule: unknown '{schedule}'; use constant, linear or cosine")


def total_steps(
    n_examples: int, global_batch: int, epochs: float, steps: int | None
) -> int:
    """Optimizer steps of a run: ``steps`` if given, else ``ceil(epochs*N/G)``."""
    if steps is not None:
        return steps
    if n_examples < 1:
        raise ValueError("data: the dataset is empty; nothing to train on")
    return max(1, math.ceil(epochs * n_examples / global_batch))


@lru_cache(maxsize=4)
def _epoch_order(n: int, seed: int, epoch: int) -> tuple[int, ...]:
    import torch

    g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    return tuple(torch.randperm(n, generator=g).tolist())


def global_batch(n: int, step: int, size: int, seed: int) -> list[int]:
    """Example indices of optimizer step ``step`` (``size`` = global batch)."""
    out = []
    for pos in range(step * size, (step + 1) * size):
        epoch, i = divmod(pos, n)
        out.append(_epoch_order(n, seed, epoch)[i])
    return out


def rank_micro_batches(
    indices: list[int], micro_batch: int, grad_accum: int, rank: int
) -> list[list[int]]:
    """The ``grad_accum`` micro-batches of ``rank`` within one global batch."""
    start = rank * grad_accum * micro_batch
    return [
        indices[start + j * micro_batch : start + (j + 1) * micro_batch]
        for j in range(grad_accum)
    ]
