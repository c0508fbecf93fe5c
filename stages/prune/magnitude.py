"""Magnitude pruning: zero the smallest |W| per layer, per output row or globally
(Han et al. 2015; Zhu & Gupta 2017), unstructured or N:M."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stages.prune import Params as KindParams
from stages.prune.targets import Pruned, select_linears


class Params(KindParams):
    method: Literal["magnitude"] = "magnitude"
    scope: Literal["layer", "row", "global"] = Field(
        "layer",
        description="Comparison group: each weight matrix ('layer'), each output "
        "row ('row'), or all selected matrices together ('global').",
    )

    @model_validator(mode="after")
    def _nm_scope(self) -> Params:
        if self.nm and self.scope != "layer":
            raise ValueError(
                f"scope: pattern {self.pattern} already fixes the group (every "
                f"{self.nm[1]} inputs); leave scope 'layer' for N:M"
            )
        return self


def magnitude_masks(
    weights: dict[str, Any], sparsity: float, scope: str, nm: tuple[int, int] | None
) -> dict[str, Any]:
    """Keep-masks for each weight matrix by |W| (pure; weights are not changed)."""
    from stages.prune import kernels as K

    if nm:
        return {k: K.keep_mask_nm(w.abs(), *nm) for k, w in weights.items()}
    if scope == "global":
        return K.keep_masks_global_abs(weights, sparsity)
    one = {"layer": K.keep_mask_layer, "row": K.keep_mask_rows}[scope]
    return {k: one(w.abs(), sparsity) for k, w in weights.items()}


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linear layers of ``model`` in place."""
    import torch

    mods = select_linears(model, params.include, params.exclude)
    weights = {k: m.weight.data for k, m in mods.items()}
    masks = magnitude_masks(weights, params.target_sparsity, params.scope, params.nm)
    with torch.no_grad():
        for k, keep in masks.items():
            weights[k].mul_(keep.to(weights[k].dtype))
    return Pruned(masks=masks, manifest={"scope": params.scope})
