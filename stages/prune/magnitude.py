"""Magnitude pruning: zero the smallest |W| per layer, per output row or globally
(Han et al. 2015; Zhu & Gupta 2017), unstructured or N:M."""

from __future__ import annotations

from collections.abc import Iterator
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


def iter_magnitude_masks(
    weights: dict[str, Any], sparsity: float, scope: str, nm: tuple[int, int] | None
) -> Iterator[tuple[str, Any]]:
    """(name, keep-mask) by |W|, one matrix at a time (weights are not changed
    here; a global threshold is fixed before the first mask is yielded)."""
    from stages.prune import kernels as K

    if nm:
        yield from ((k, K.keep_mask_nm(w.abs(), *nm)) for k, w in weights.items())
    elif scope == "global":
        yield from K.iter_masks_global_abs(weights, sparsity)
    else:
        one = {"layer": K.keep_mask_layer, "row": K.keep_mask_rows}[scope]
        yield from ((k, one(w.abs(), sparsity)) for k, w in weights.items())


def magnitude_masks(
    weights: dict[str, Any], sparsity: float, scope: str, nm: tuple[int, int] | None
) -> dict[str, Any]:
    """Keep-masks for each weight matrix by |W| (pure)."""
    return dict(iter_magnitude_masks(weights, sparsity, scope, nm))


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linear layers of ``model`` in place, one at a time."""
    import torch

    from stages.common.maskio import pack

    mods = select_linears(model, params.include, params.exclude)
    weights = {k: m.weight.data for k, m in mods.items()}
    it = iter_magnitude_masks(weights, params.target_sparsity, params.scope, params.nm)
    masks = {}
    with torch.no_grad():
        for k, keep in ctx.progress(it, desc="magnitude", total=len(weights)):
            weights[k].mul_(keep.to(weights[k].dtype))
            masks[k] = pack(keep)
    return Pruned(masks=masks, manifest={"scope": params.scope})
