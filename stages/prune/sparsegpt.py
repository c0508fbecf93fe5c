"""SparseGPT: OBS-style layer-wise pruning with weight reconstruction from the
inverse Hessian of calibration inputs, blocked and damped (Frantar & Alistarh
2023, "SparseGPT: Massive Language Models Can Be Accurately Pruned in One-Shot")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stages.prune import CalibratedParams, MaskParams
from stages.prune.targets import Pruned, linears_by_block


class Params(MaskParams, CalibratedParams):
    method: Literal["sparsegpt"] = "sparsegpt"
    blocksize: int = Field(
        128, ge=1, description="Columns pruned together (lazy batch updates)."
    )
    percdamp: float = Field(
        0.01, gt=0, description="Damping added to diag(H), as a fraction of its mean."
    )

    @model_validator(mode="after")
    def _block_multiple_of_m(self) -> Params:
        if self.nm and self.blocksize % self.nm[1]:
            raise ValueError(
                f"blocksize: {self.blocksize} must be a multiple of M={self.nm[1]} "
                f"for pattern {self.pattern}"
            )
        return self


class Hessian:
    """H = 2/n sum_t x_t x_t^T over the n calibration tokens seen by a linear."""

    def __init__(self, linear: Any) -> None:
        import torch

        d = linear.in_features
        self.h = torch.zeros(d, d, dtype=torch.float32, device=linear.weight.device)
        self.n = 0

    def add(self, x: Any) -> None:
        x = x.reshape(-1, x.shape[-1]).float()
        self.h.addmm_(x.T, x)
        self.n += x.shape[0]

    def value(self) -> Any:
        """H, scaled in place (the accumulator is spent afterwards)."""
        return self.h.mul_(2 / max(self.n, 1))


def _upper_inverse_cholesky(h: Any, percdamp: float) -> Any:
    """Upper Cholesky factor of (H + λI)^-1; λ grows tenfold until H is PD.

    Overwrites ``h`` (damped, then inverted in place), so that at most three
    (cols, cols) matrices exist at once.
    """
    import torch

    damp = percdamp * float(h.diagonal().mean())
    h.diagonal().add_(damp)
    for _ in range(6):
        chol, info = torch.linalg.cholesky_ex(h)
        if not info:
            torch.cholesky_inverse(chol, out=h)
            del chol
            return torch.linalg.cholesky(h, upper=True)
        h.diagonal().add_(9 * damp)  # total damping becomes 10x
        damp = damp * 10
    raise ValueError(
        "percdamp: the calibration Hessian stays singular even with 1e5x damping; "
        "raise percdamp or give more calibration samples"
    )


def sparsegpt_prune(
    weight: Any,
    hessian: Any,
    sparsity: float,
    nm: tuple[int, int] | None,
    blocksize: int = 128,
    percdamp: float = 0.01,
    overwrite_hessian: bool = False,
) -> tuple[Any, Any]:
    """Prune ``weight`` (rows, cols) given H (cols, cols); returns the
    reconstructed weight (float32) and its keep-mask.

    Unstructured: in each block of ``blocksize`` columns the ``floor(s * n)``
    entries with the lowest OBS saliency w^2 / [H^-1]_jj^2 are pruned. N:M:
    the N highest-saliency of every M columns are kept, chosen when reached.
    Pruning a column spreads its error over the not-yet-pruned columns.
    The weight's existing zeros are pruned first and count towards the target
    (their saliency is set to -inf: the updates from earlier columns would
    otherwise revive them). ``overwrite_hessian`` lets it use ``hessian``'s
    memory instead of a copy.
    """
    import torch

    from stages.prune.kernels import keep_mask_layer, keep_mask_nm

    w = weight.detach().clone().float()
    old = w != 0  # the input's keep-mask (re-pruning a sparse model)
    h = hessian if overwrite_hessian else hessian.clone()
    dead = torch.diag(h) == 0  # inputs never active: their weights do nothing
    h[dead, dead] = 1
    w[:, dead] = 0
    hinv = _upper_inverse_cholesky(h, percdamp)
    del h, hessian
    rows, cols = w.shape
    keep = torch.ones_like(w, dtype=torch.bool)
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        w1 = w[:, i1:i2].clone()
        q1 = torch.zeros_like(w1)
        err1 = torch.zeros_like(w1)
        hinv1 = hinv[i1:i2, i1:i2]
        d = torch.diag(hinv1)
        old1 = old[:, i1:i2]
        keep1 = old1.clone()
        if not nm:
            sal = (w1**2 / d[None, :] ** 2).masked_fill_(~old1, float("-inf"))
            keep1 &= keep_mask_layer(sal, sparsity)
        for i in range(i2 - i1):
            if nm and i % nm[1] == 0:
                j = slice(i, i + nm[1])
                sal = w1[:, j] ** 2 / d[None, j] ** 2
                sal.masked_fill_(~old1[:, j], float("-inf"))
                keep1[:, j] &= keep_mask_nm(sal, *nm)
            col = w1[:, i]
            q = col * keep1[:, i]
            e = (col - q) / hinv1[i, i]
            w1[:, i:] -= e[:, None] * hinv1[i, i:][None, :]
            q1[:, i] = q
            err1[:, i] = e
        w[:, i1:i2] = q1
        keep[:, i1:i2] = keep1
        w[:, i2:] -= err1 @ hinv[i1:i2, i2:]
    return w, keep


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Prune the selected linears block by block with reconstruction, each
    block at its profile's sparsity."""
    from stages.prune.layerwise import prune_blockwise
    from stages.prune.owl import block_sparsities

    groups = linears_by_block(model, params.include, params.exclude, "sparsegpt")
    nm = params.nm
    sparsities, profile = block_sparsities(model, groups, calib, params, "sparsegpt")

    def prune(w: Any, acc: Hessian, sparsity: float) -> tuple[Any, Any]:
        h = acc.value()
        return sparsegpt_prune(
            w, h, sparsity, nm, params.blocksize, params.percdamp, True
        )

    samples = calib.samples("sparsegpt")
    masks = prune_blockwise(
        model, groups, samples, params, ctx, Hessian, prune, "sparsegpt", sparsities
    )
    manifest = {"blocksize": params.blocksize, "percdamp": params.percdamp}
    return Pruned(masks=masks, manifest={**manifest, **profile})
