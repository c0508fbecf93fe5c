"""DARE + task arithmetic: drop each task-vector entry with probability
1 - density, rescale the survivors, add them up (Yu et al. 2024); mergekit
`dare_linear` with `weight`, `density`, `normalize`, `lambda`, `rescale`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.merge import SparsifiedParams
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2311.03099"


class Params(SparsifiedParams):
    method: Literal["dare_linear"] = "dare_linear"
    normalize: bool = Field(
        False, description="mergekit `normalize`: divide by the sum of the weights."
    )
    rescale: bool = Field(
        True,
        description="mergekit `rescale`: scale the kept entries to the task "
        "vector's L1 norm (1/density in expectation).",
    )


def merge_tensor(job: TensorJob, params: Params) -> Any:
    from stages.merge.dare import dare_merge

    return dare_merge(job, params, elect_sign=False)
