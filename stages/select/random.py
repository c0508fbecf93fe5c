"""Random selection: a seeded uniform sample of the pool (the usual baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pipelines.contract import RunContext
from stages.select import BudgetParams, Selection


class Params(BudgetParams):
    method: Literal["random"] = "random"


def select(
    params: Params,
    pool: list[dict[str, Any]],
    n: int,
    inputs: dict[str, Path],
    out_dir: Path,
    ctx: RunContext,
    seed: int,
) -> Selection:
    """Draw ``n`` distinct pool indices uniformly at random with ``seed``."""
    import numpy as np

    rng = np.random.default_rng(seed)
    idx = rng.choice(len(pool), size=n, replace=False)
    return Selection(indices=[int(i) for i in idx], report={"rng": "numpy PCG64"})
