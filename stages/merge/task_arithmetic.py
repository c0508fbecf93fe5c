"""Task arithmetic: base + lambda * sum_i w_i (model_i - base) (Ilharco et al.
2023); mergekit `task_arithmetic` with `weight`, `normalize`, `lambda`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.merge import TaskVectorParams
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2212.04089"


class Params(TaskVectorParams):
    method: Literal["task_arithmetic"] = "task_arithmetic"
    normalize: bool = Field(
        False, description="mergekit `normalize`: divide by the sum of the weights."
    )


def merge_tensor(job: TensorJob, params: Params) -> Any:
    import torch

    from stages.merge import kernels

    deltas = torch.stack([t - job.base for t in job.tensors])
    mixed = kernels.combine_deltas(
        deltas, torch.tensor(job.weights), False, params.normalize, params.lambda_
    )
    return job.base + mixed
