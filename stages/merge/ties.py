"""TIES: trim each task vector to its largest-magnitude `density`, elect a sign
per parameter by summed mass, average the agreeing values (Yadav et al. 2023);
mergekit `ties` with `weight`, `density`, `normalize`, `lambda`, `rescale`."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.merge import SparsifiedParams
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2306.01708"


class Params(SparsifiedParams):
    method: Literal["ties"] = "ties"
    normalize: bool = Field(
        True,
        description="mergekit `normalize`: divide by the weights of the agreeing "
        "models (TIES's disjoint mean).",
    )


def merge_tensor(job: TensorJob, params: Params) -> Any:
    import torch

    from stages.merge import kernels

    deltas = torch.stack(
        [
            kernels.magnitude_trim(t - job.base, d, params.rescale)
            for t, d in zip(job.tensors, job.densities, strict=True)
        ]
    )
    mixed = kernels.combine_deltas(
        deltas, torch.tensor(job.weights), True, params.normalize, params.lambda_
    )
    return job.base + mixed
