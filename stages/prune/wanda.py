"""Wanda: prune by |W_ij| * ||X_j||_2 per output row (the paper's comparison
group; scope 'layer' compares the whole matrix), no weight update (Sun et al.
2023, "A Simple and Effective Pruning Approach for LLMs")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stages.prune import CalibratedParams, MaskParams
from stages.prune.targets import Pruned, linears_by_block


class Params(MaskParams, CalibratedParams):
    method: Literal["wanda"] = "wanda"
    scope: Literal["row", "layer"] = Field(
        "row",
        description="Comparison group: each output row ('row', the Wanda paper's "
        "default) or the whole weight matrix ('layer', magnitude's default).",
    )

    @model_validator(mode="after")
    def _nm_scope(self) -> Params:
        if self.nm and self.scope != "row":
            raise ValueError(
                f"scope: pattern {self.pattern} already fixes the group (every "
                f"{self.nm[1]} inputs of a row); leave scope 'row' for N:M"
            )
        return self


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
    weight: Any,
    sq_norms: Any,
    sparsity: float,
    nm: tuple[int, int] | None,
    scope: str = "row",
) -> Any:
    """Keep-mask: the lowest-score ``floor(s * n)`` of each output row (or of
    the whole matrix, ``scope='layer'``) pruned, or the N highest of every M
    inputs for N:M; the weight's existing zeros stay pruned and count towards
    the target."""
    from stages.prune import kernels as K

    scores, old = K.zeros_first(wanda_scores(weight, sq_norms), weight)
    if nm:
        return K.keep_mask_nm(scores, *nm) & old
    one = {"row": K.keep_mask_rows, "layer": K.keep_mask_layer}[scope]
    return one(scores, sparsity) & old


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linears block by block from calibration activations,
    each block at its profile's sparsity."""
    from stages.prune.layerwise import prune_blockwise
    from stages.prune.owl import block_sparsities

    groups = linears_by_block(model, params.include, params.exclude, "wanda")
    nm = params.nm
    sparsities, profile = block_sparsities(model, groups, calib, params, "wanda")

    def prune(w: Any, acc: InputNorms, sparsity: float) -> tuple[Any, Any]:
        keep = wanda_mask(w, acc.sq, sparsity, nm, params.scope)
        return w * keep, keep

    samples = calib.samples("wanda")
    masks = prune_blockwise(
        model, groups, samples, params, ctx, InputNorms, prune, "wanda", sparsities
    )
    return Pruned(masks=masks, manifest={"scope": params.scope, **profile})
