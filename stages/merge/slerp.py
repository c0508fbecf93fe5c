"""SLERP: spherical interpolation between exactly two models, per tensor
(Shoemake 1985); mergekit `slerp` with `t` (t = 0: the first model)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stages.merge import Params as KindParams
from stages.merge.job import TensorJob

REFERENCE = "https://en.wikipedia.org/wiki/Slerp"


class Params(KindParams):
    method: Literal["slerp"] = "slerp"
    t: float = Field(
        ...,
        ge=0,
        le=1,
        description="mergekit `t`: 0 gives the first model of `models` "
        "(mergekit's base_model), 1 the second.",
    )

    @model_validator(mode="after")
    def _two(self) -> Params:
        if len(self.models) > 2:
            raise ValueError(
                f"models: slerp merges exactly two models (got {len(self.models)}: "
                f"{', '.join(self.models)}); use linear or a task-vector method "
                "for more"
            )
        return self


def merge_tensor(job: TensorJob, params: Params) -> Any:
    from stages.merge import kernels

    a, b = job.tensors
    return kernels.slerp(params.t, a, b)
