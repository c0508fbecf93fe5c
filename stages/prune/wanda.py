"""Wanda: prune by |W_ij| * ||X_j||_2 per output row, no weight update
(Sun et al. 2023, "A Simple and Effective Pruning Approach for LLMs")."""

from __future__ import annotations

from typing import Any, Literal

from stages.prune import CalibratedParams
from stages.prune.targets import Pruned, linears_by_block


class Params(CalibratedParams):
    method: Literal["wanda"] = "wanda"


class InputNorms:
    """Running sum over calibration tokens of x_j^2 per input feature j."""

    def __init__(self, linear: Any) -> None:
        import torch

        self.sq = torch.zeros(
            linear.in_features, dtype=torch.float32, device=linear.weight.device
        )

    def add(self, x: Any) -> None:
        self.sq += x.reshape(-1, x.shape[-1]).float().pow(2).sum(0)


def wanda_scores(weight: Any, sq_norms: Any) -> Any:
    """S_ij = |W_ij| * ||X_j||_2, with ``sq_norms`` = sum of x_j^2 over tokens."""
    return weight.abs().float() * sq_norms.sqrt()[None, :]


def wanda_mask(
    weight: Any, sq_norms: Any, sparsity: float, nm: tuple[int, int] | None
) -> Any:
    """Keep-mask: per output row the lowest-score ``floor(s * cols)`` pruned, or
    the N highest of every M inputs for N:M."""
    from stages.prune.kernels import keep_mask_nm, keep_mask_rows

    scores = wanda_scores(weight, sq_norms)
    return keep_mask_nm(scores, *nm) if nm else keep_mask_rows(scores, sparsity)


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linears block by block from calibration activations."""
    from stages.prune.layerwise import prune_blockwise

    groups = linears_by_block(model, params.include, params.exclude, "wanda")
    sparsity, nm = params.target_sparsity, params.nm

    def prune(w: Any, acc: InputNorms) -> tuple[Any, Any]:
        keep = wanda_mask(w, acc.sq, sparsity, nm)
        return w * keep, keep

    ids = calib.ids("wanda")
    masks = prune_blockwise(
        model, groups, ids, params, ctx, InputNorms, prune, "wanda blocks"
    )
    return Pruned(masks=masks)
