"""PCB: parameter competition balancing, intra-task importance times inter-task
agreement, drop the lowest scores, rescale the rest (Du et al. 2024,
arXiv:2410.02396).

Scores are computed per tensor (the paper flattens the whole model; per-tensor
statistics are what a streaming merge can hold, as mergekit's TIES does).
`density` is the paper's `pcb_ratio` (fraction kept per task), `clamp_ratio`
its outlier clamping, `weight` its per-task lambda, `lambda` a global scale.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from stages.merge import TaskVectorParams, check_density
from stages.merge.job import TensorJob

REFERENCE = "https://arxiv.org/abs/2410.02396"


class Params(TaskVectorParams):
    method: Literal["pcb"] = "pcb"
    density: float | dict[str, float] = Field(
        0.1,
        description="PCB `pcb_ratio`: fraction of each task vector kept (highest "
        "balanced scores), in (0, 1]; one number or a mapping stage -> density.",
    )
    clamp_ratio: float = Field(
        0.0001,
        ge=0,
        lt=0.5,
        description="Fraction of the smallest and of the largest |delta| of each "
        "task clamped before scoring (the paper's outlier clamp).",
    )

    @model_validator(mode="after")
    def _density(self) -> Params:
        check_density(self.density, self.models)
        return self


def merge_tensor(job: TensorJob, params: Params) -> Any:
    import torch

    from stages.merge import kernels

    deltas = torch.stack(job.tensors).sub_(job.base)  # one (K, ...) copy
    merged = kernels.pcb_merge(
        deltas,
        torch.tensor(job.weights),
        job.densities,
        params.clamp_ratio,
        params.lambda_,
    )
    return job.base + merged
