"""Magnitude pruning: zero the smallest |W| per layer (the papers' default),
per output row or globally (Han et al. 2015; Zhu & Gupta 2017), unstructured or
N:M."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input
from stages.prune import MaskParams
from stages.prune.targets import Pruned, linears_by_block, select_linears


class Params(MaskParams):
    method: Literal["magnitude"] = "magnitude"
    calib: str | None = Input(
        "dataset",
        "Dataset stage whose records give OWL's outlier ratios (`profile: owl`); "
        "uniform magnitude pruning reads no data (a given one is ignored, so a "
        "method sweep can share `calib`).",
        default=None,
    )
    scope: Literal["layer", "row", "global"] = Field(
        "layer",
        description="Comparison group: each weight matrix ('layer', the default "
        "of Han et al. and Zhu & Gupta), each output row ('row', Wanda's "
        "default), or all selected matrices together ('global').",
    )

    @model_validator(mode="after")
    def _nm_scope(self) -> Params:
        if self.nm and self.scope != "layer":
            raise ValueError(
                f"scope: pattern {self.pattern} already fixes the group (every "
                f"{self.nm[1]} inputs); leave scope 'layer' for N:M"
            )
        if self.profile == "owl" and self.scope == "global":
            raise ValueError(
                "scope: profile owl sets each block's sparsity, a global threshold "
                "sets none; use scope 'layer' or 'row' with owl"
            )
        if self.profile == "owl" and self.calib is None:
            raise ValueError(
                "calib: magnitude with profile owl reads calibration data (the "
                "outlier ratios); set `calib: <dataset stage>` (e.g. the world)"
            )
        return self


def iter_magnitude_masks(
    weights: dict[str, Any],
    sparsity: float,
    scope: str,
    nm: tuple[int, int] | None,
    per_module: dict[str, float] | None = None,
) -> Iterator[tuple[str, Any]]:
    """(name, keep-mask) by |W|, one matrix at a time (weights are not changed
    here; a global threshold is fixed before the first mask is yielded).
    Existing zeros stay pruned and count towards ``sparsity`` (or
    ``per_module[name]``, a layer-wise profile's)."""
    from stages.prune import kernels as K

    if scope == "global" and not nm:  # zeros have the lowest |w| already
        for k, keep in K.iter_masks_global_abs(weights, sparsity):
            yield k, keep & (weights[k] != 0)
        return
    for k, w in weights.items():
        scores, old = K.zeros_first(w.abs(), w)
        if nm:
            keep = K.keep_mask_nm(scores, *nm)
        else:
            one = {"layer": K.keep_mask_layer, "row": K.keep_mask_rows}[scope]
            keep = one(scores, (per_module or {}).get(k, sparsity))
        yield k, keep & old


def magnitude_masks(
    weights: dict[str, Any], sparsity: float, scope: str, nm: tuple[int, int] | None
) -> dict[str, Any]:
    """Keep-masks for each weight matrix by |W| (pure)."""
    return dict(iter_magnitude_masks(weights, sparsity, scope, nm))


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linear layers of ``model`` in place, one at a time
    (each block at its profile's sparsity)."""
    import torch

    from stages.common.maskio import pack
    from stages.prune.owl import block_sparsities

    per_module, profile = None, {"profile": "uniform"}
    if params.profile != "uniform":
        groups = linears_by_block(
            model, params.include, params.exclude, "magnitude (profile owl)"
        )
        blocks, profile = block_sparsities(model, groups, calib, params, "magnitude")
        per_module = {n: s for g, s in zip(groups, blocks, strict=True) for n in g}
    mods = select_linears(model, params.include, params.exclude)
    weights = {k: m.weight.data for k, m in mods.items()}
    it = iter_magnitude_masks(
        weights, params.target_sparsity, params.scope, params.nm, per_module
    )
    masks = {}
    with torch.no_grad():
        for k, keep in ctx.progress(it, desc="magnitude", total=len(weights)):
            weights[k].mul_(keep.to(weights[k].dtype))
            masks[k] = pack(keep)
    return Pruned(masks=masks, manifest={"scope": params.scope, **profile})
