"""Linear: a weighted average of the models' weights (Wortsman et al. 2022,
model soups); mergekit `linear` with `weight` and `normalize`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.merge import WeightedParams
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2203.05482"


class Params(WeightedParams):
    method: Literal["linear"] = "linear"
    normalize: bool = Field(
        True, description="mergekit `normalize`: divide by the sum of the weights."
    )


def merge_tensor(job: TensorJob, params: Params) -> Any:
    import torch

    from stages.merge import kernels

    return kernels.linear(
        torch.stack(job.tensors), torch.tensor(job.weights), params.normalize
    )
