"""IFD baseline: Instruction-Following Difficulty, loss(response | instruction)
/ loss(response), highest first (Li et al., "From Quantity to Quality", 2023),
measured with the pruned model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from pipelines.contract import RunContext
from stages.select import Selection, cache_root
from stages.select.lmparams import LMParams


class Params(LMParams):
    method: Literal["ifd"] = "ifd"
    demote_above_one: bool = Field(
        True,
        description="Rank records with IFD >= 1 (the instruction does not help "
        "the response; Li et al. drop them) after all others.",
    )


def ifd_order(cond: Any, uncond: Any, demote_above_one: bool) -> Any:
    """Indices by IFD = cond / uncond, highest first (ties: pool order); with
    ``demote_above_one`` the IFD >= 1 records come after the rest."""
    import numpy as np

    un = np.maximum(np.asarray(uncond, np.float64), 1e-9)
    ifd = np.asarray(cond, np.float64) / un
    tier = (ifd >= 1.0).astype(int) if demote_above_one else np.zeros(len(ifd), int)
    return np.lexsort((np.arange(len(ifd)), -ifd, tier)), ifd


def select(
    params: Params,
    pool: list[dict[str, Any]],
    n: int,
    inputs: dict[str, Path],
    out_dir: Path,
    ctx: RunContext,
    seed: int,
) -> Selection:
    """Top ``n`` records by IFD under the pruned model."""
    from stages.select.perplexity import nll_scores

    root = cache_root(out_dir, ctx)
    mdir = Path(inputs["model"])
    cond, new_c = nll_scores(params, mdir, pool, root, ctx)
    uncond, new_u = nll_scores(params, mdir, pool, root, ctx, response_only=True)
    order, ifd = ifd_order(cond, uncond, params.demote_above_one)
    chosen = order[:n]
    report = {
        "ifd_pool_mean": float(ifd.mean()),
        "ifd_selected_mean": float(ifd[chosen].mean()),
        "ifd_at_least_one": int((ifd >= 1).sum()),
        "computed": {"nll": new_c, "nll_response_only": new_u},
        "cache": str(root),
    }
    metrics = {"ifd_selected_mean": report["ifd_selected_mean"]}
    return Selection([int(i) for i in chosen], report, metrics)
