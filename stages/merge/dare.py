"""DARE's random drop shared by dare_linear and dare_ties (Yu et al. 2024)."""

from __future__ import annotations

from typing import Any

from stages.merge.job import TensorJob


def dropped_deltas(job: TensorJob, rescale: bool) -> Any:
    """(K, *shape) task vectors, each entry kept with probability ``density``
    of its model; one generator per tensor, seeded from the stage seed and the
    tensor name, so a merge is reproducible bit for bit."""
    import torch

    from stages.merge import kernels

    gen = torch.Generator().manual_seed(job.seed)
    return torch.stack(
        [
            kernels.bernoulli_drop(t - job.base, d, rescale, gen)
            for t, d in zip(job.tensors, job.densities, strict=True)
        ]
    )


def dare_merge(job: TensorJob, params: Any, elect_sign: bool) -> Any:
    """base + lambda * combined dropped task vectors; ``elect_sign``: TIES's
    sign election (dare_ties) or a plain weighted sum (dare_linear)."""
    import torch

    from stages.merge import kernels

    mixed = kernels.combine_deltas(
        dropped_deltas(job, params.rescale),
        torch.tensor(job.weights),
        elect_sign,
        params.normalize,
        params.lambda_,
    )
    return job.base + mixed
