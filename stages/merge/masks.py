"""Sparsity of merged tensors: mask policies over the inputs' keep-masks, N:M
preservation and magnitude re-sparsification (pure tensor functions)."""

from __future__ import annotations

import torch

NM_BLOCKS = (4, 8, 16, 32)  # M values recognised when detecting N:M masks


def policy_mask(
    policy: str, masks: list[torch.Tensor | None], ref: int
) -> torch.Tensor | None:
    """The keep-mask of a merged tensor from its inputs' masks (None = dense).

    ``base``: the mask of input ``ref`` (the base model, or the first model);
    ``intersection``: kept where every sparse input keeps it; ``union``: kept
    where any input keeps it (a dense input keeps everything); ``none``: None."""
    if policy == "none":
        return None
    if policy == "base":
        return masks[ref]
    present = [m for m in masks if m is not None]
    if not present:
        return None
    if policy == "intersection":
        out = present[0].clone()
        for m in present[1:]:
            out &= m
        return out
    if policy == "union":
        if len(present) < len(masks):
            return None
        out = present[0].clone()
        for m in present[1:]:
            out |= m
        return out
    raise ValueError(f"mask: unknown policy '{policy}'")


def detect_nm(keep: torch.Tensor) -> tuple[int, int] | None:
    """(N, M) when every block of M consecutive inputs of each row keeps
    exactly N (smallest M of ``NM_BLOCKS`` that fits), else None."""
    if keep.dim() != 2:
        return None
    rows, cols = keep.shape
    for m in NM_BLOCKS:
        if cols % m:
            continue
        counts = keep.reshape(rows, cols // m, m).sum(dim=2)
        n = int(counts.reshape(-1)[0])
        if 0 < n < m and bool((counts == n).all()):
            return n, m
    return None


def common_nm(masks: list[torch.Tensor | None]) -> tuple[int, int] | None:
    """The N:M pattern every present mask has, if they share one."""
    present = [m for m in masks if m is not None]
    if not present:
        return None
    pats = {detect_nm(m) for m in present}
    return pats.pop() if len(pats) == 1 else None


def enforce_nm(
    values: torch.Tensor, keep: torch.Tensor, n: int, m: int
) -> torch.Tensor:
    """``keep`` limited to the ``n`` largest |values| of every block of ``m``
    (blocks that already keep at most ``n`` are unchanged)."""
    rows, cols = values.shape
    score = torch.where(keep, values.abs().float(), -1.0).reshape(rows, cols // m, m)
    top = torch.zeros_like(score, dtype=torch.bool)
    top.scatter_(2, torch.topk(score, n, dim=2).indices, True)
    return keep & top.reshape(rows, cols)


def resparsify_mask(
    values: torch.Tensor,
    keep: torch.Tensor | None,
    sparsity: float,
    nm: tuple[int, int] | None,
) -> torch.Tensor:
    """Magnitude re-pruning of a merged weight: zeros already imposed by
    ``keep`` go first, then the smallest |values| (per matrix, or N:M)."""
    from stages.prune.kernels import keep_mask_layer, keep_mask_nm

    score = values.abs().float()
    if keep is not None:
        score = torch.where(keep, score, -1.0)
    new = keep_mask_nm(score, *nm) if nm else keep_mask_layer(score, sparsity)
    return new & keep if keep is not None else new


def is_decoder_linear(name: str, shape: tuple[int, ...]) -> bool:
    """A 2-D weight inside a decoder block (what prune targets by default)."""
    return len(shape) == 2 and ".layers." in name and name.endswith(".weight")
