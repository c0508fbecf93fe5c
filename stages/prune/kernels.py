"""Pure mask kernels shared by the pruning methods (no I/O, no device defaults).

A mask is a bool tensor the shape of the weight: True = weight kept. Every
kernel prunes an exact count (``floor(sparsity * n)`` entries of each group) so
tests can assert exact zero fractions; ties are broken by ``torch.topk`` order.

Re-pruning a sparse model: :func:`zeros_first` ranks the weight's existing
zeros below every score, so a group's count of ``floor(s * n)`` includes them
(a 50%-sparse layer pruned to 60% loses 10 more points), and the caller ANDs
the result with the old keep-mask (a group that already holds more zeros than
its count keeps them all).
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


def n_pruned(n: int, sparsity: float) -> int:
    """Entries to prune out of ``n`` at ``sparsity`` (floor, as Wanda/SparseGPT do)."""
    return int(n * sparsity)


def zeros_first(
    scores: torch.Tensor, weight: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(scores with ``weight``'s zeros set to -inf, the old keep-mask
    ``weight != 0``): a mask drawn from the scores prunes old zeros first."""
    old = weight != 0
    return scores.masked_fill(~old, float("-inf")), old


def keep_mask_rows(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per output row: prune the ``floor(s * cols)`` lowest-scoring entries of
    each row of a (rows, cols) score matrix (Wanda's comparison group)."""
    k = n_pruned(scores.shape[1], sparsity)
    mask = torch.ones_like(scores, dtype=torch.bool)
    if k:
        idx = torch.topk(scores, k, dim=1, largest=False).indices
        mask.scatter_(1, idx, False)
    return mask


def keep_mask_layer(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Per layer: prune the ``floor(s * numel)`` lowest scores of the whole matrix."""
    flat = scores.reshape(-1)
    k = n_pruned(flat.numel(), sparsity)
    mask = torch.ones_like(flat, dtype=torch.bool)
    if k:
        mask[torch.topk(flat, k, largest=False).indices] = False
    return mask.view_as(scores)


def _count_le(weights: list[torch.Tensor], t: torch.Tensor) -> int:
    return sum(int(torch.count_nonzero(w.abs().float() <= t)) for w in weights)


def global_threshold(weights: list[torch.Tensor], k: int) -> tuple[float, int]:
    """The k-th smallest |w| over all matrices (k >= 1) and how many entries
    equal to it must be pruned, found by bisection on float32 bit patterns so
    that nothing the size of the model is ever concatenated."""
    lo, hi = 0, 0x7F800000  # bit patterns of +0.0 and +inf; monotone for x >= 0
    while lo < hi:
        mid = (lo + hi) // 2
        t = torch.tensor(mid, dtype=torch.int32).view(torch.float32)
        if _count_le(weights, t) >= k:
            hi = mid
        else:
            lo = mid + 1
    t = torch.tensor(lo, dtype=torch.int32).view(torch.float32)
    below = sum(int(torch.count_nonzero(w.abs().float() < t)) for w in weights)
    return float(t), k - below


def iter_masks_global_abs(
    weights: dict[str, torch.Tensor], sparsity: float
) -> Iterator[tuple[str, torch.Tensor]]:
    """Across layers: prune the ``floor(s * total)`` smallest |w| of all matrices
    together, so per-layer sparsity varies while the global one is exact. The
    threshold is fixed first; masks are then yielded one matrix at a time."""
    total = sum(w.numel() for w in weights.values())
    k = n_pruned(total, sparsity)
    t, ties = global_threshold(list(weights.values()), k) if k else (-1.0, 0)
    for name, w in weights.items():
        a = w.abs().float()
        keep = a >= t  # entries below t are pruned; ties decided next
        if ties:
            eq = (a == t).reshape(-1).nonzero().squeeze(1)[:ties]
            keep.view(-1)[eq] = False
            ties -= len(eq)
        yield name, keep


def keep_masks_global_abs(
    weights: dict[str, torch.Tensor], sparsity: float
) -> dict[str, torch.Tensor]:
    """:func:`iter_masks_global_abs` as a dict."""
    return dict(iter_masks_global_abs(weights, sparsity))


def keep_mask_nm(scores: torch.Tensor, n: int, m: int) -> torch.Tensor:
    """N:M semi-structured: in every block of ``m`` consecutive input columns of
    each row keep the ``n`` highest scores (NVIDIA 2:4 sparsity, Mishra et al.
    2021). ``scores`` is (rows, cols) with ``cols % m == 0``."""
    rows, cols = scores.shape
    if cols % m:
        raise ValueError(
            f"N:M pattern {n}:{m} needs the input dimension ({cols}) divisible by {m}; "
            "choose an M that divides it or exclude this module"
        )
    blocks = scores.reshape(rows, cols // m, m)
    idx = torch.topk(blocks, m - n, dim=2, largest=False).indices
    mask = torch.ones_like(blocks, dtype=torch.bool)
    mask.scatter_(2, idx, False)
    return mask.reshape(rows, cols)
