"""DARE + TIES: DARE's random drop and rescale, then TIES's sign election and
agreeing sum (Yu et al. 2024); mergekit `dare_ties` with `weight`, `density`,
`normalize`, `lambda`, `rescale`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.merge import SparsifiedParams
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2311.03099"


class Params(SparsifiedParams):
    method: Literal["dare_ties"] = "dare_ties"
    normalize: bool = Field(
        False,
        description="mergekit `normalize`: divide by the weights of the agreeing "
        "models.",
    )
    rescale: bool = Field(
        True,
        description="mergekit `rescale`: scale the kept entries to the task "
        "vector's L1 norm (1/density in expectation).",
    )


def merge_tensor(job: TensorJob, params: Params) -> Any:
    from stages.merge.dare import dare_merge

    return dare_merge(job, params, elect_sign=True)
