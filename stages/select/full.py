"""Full pool: select every record (recovery on all the data; the upper baseline)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import model_validator

from pipelines.contract import RunContext
from stages.select import Params as KindParams
from stages.select import Selection


class Params(KindParams):
    method: Literal["full"] = "full"

    @model_validator(mode="after")
    def _no_budget(self) -> Params:
        if self.budget is not None and not (
            isinstance(self.budget, float) and self.budget == 1.0
        ):
            raise ValueError(
                f"budget: method 'full' takes the whole pool; remove budget "
                f"(got {self.budget}) or use another method"
            )
        return self


def select(
    params: Params,
    pool: list[dict[str, Any]],
    n: int,
    inputs: dict[str, Path],
    out_dir: Path,
    ctx: RunContext,
    seed: int,
) -> Selection:
    """Every pool index, in pool order."""
    return Selection(indices=list(range(len(pool))))
