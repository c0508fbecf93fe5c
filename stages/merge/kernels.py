"""Pure tensor maths of the merge methods (no I/O, no device defaults).

Shapes: ``deltas`` and ``tensors`` are stacked per model, (K, *shape); weights
are (K,). Semantics follow mergekit's ``generalized_task_arithmetic.py``,
``sparsify.py``, ``linear.py`` and ``slerp.py`` so results agree to float
rounding.
"""

from __future__ import annotations

import torch


def _expand(w: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(K,) -> (K, 1, ..., 1) to broadcast against (K, *shape)."""
    return w.reshape(-1, *([1] * (like.dim() - 1)))


def linear(
    tensors: torch.Tensor, weights: torch.Tensor, normalize: bool
) -> torch.Tensor:
    """sum_i w_i x_i, divided by sum_i w_i when ``normalize`` (mergekit linear)."""
    w = _expand(weights.to(tensors.dtype), tensors)
    out = (w * tensors).sum(dim=0)
    return out / w.sum(dim=0) if normalize else out


def slerp(
    t: float,
    v0: torch.Tensor,
    v1: torch.Tensor,
    dot_threshold: float = 0.9995,
    eps: float = 1e-8,
) -> torch.Tensor:
    """Spherical interpolation of two tensors seen as flat vectors: ``t = 0``
    gives ``v0``, ``t = 1`` gives ``v1``; nearly (anti)parallel directions
    (|cos| > ``dot_threshold``) fall back to linear interpolation (mergekit)."""
    a, b = v0.float(), v1.float()
    na, nb = a.norm(), b.norm()
    ua = a / na if na > eps else a
    ub = b / nb if nb > eps else b
    dot = (ua * ub).sum()
    if dot.abs() > dot_threshold:
        return (1 - t) * a + t * b
    theta = torch.arccos(dot)
    sin_theta = torch.sin(theta)
    s0 = torch.sin(theta - theta * t) / sin_theta
    s1 = torch.sin(theta * t) / sin_theta
    return s0 * a + s1 * b


def l1_rescale(
    tensor: torch.Tensor, kept: torch.Tensor, eps: float = 1e-7
) -> torch.Tensor:
    """``kept`` scaled to the L1 norm of ``tensor`` (unchanged when either norm
    is below ``eps``): mergekit's ``rescale``."""
    before, after = tensor.abs().sum(), kept.abs().sum()
    if before < eps or after < eps:
        return kept
    return kept * (before / after)


def magnitude_trim(
    delta: torch.Tensor, density: float, rescale: bool = False
) -> torch.Tensor:
    """Keep the ``int(density * numel)`` largest |delta| (at least one), zero
    the rest (TIES's trim; mergekit ``sparsify.magnitude``)."""
    if density >= 1:
        return delta
    k = max(int(density * delta.numel()), 1)
    keep = torch.zeros(delta.numel(), dtype=delta.dtype)
    keep[torch.argsort(delta.abs().reshape(-1), descending=True)[:k]] = 1
    kept = delta * keep.view_as(delta)
    return l1_rescale(delta, kept) if rescale else kept


def bernoulli_drop(
    delta: torch.Tensor, density: float, rescale: bool, generator: torch.Generator
) -> torch.Tensor:
    """Keep each entry with probability ``density`` (DARE's random drop);
    ``rescale`` restores the L1 norm, 1/density in expectation."""
    if density >= 1:
        return delta
    keep = torch.bernoulli(torch.full_like(delta, density), generator=generator)
    kept = delta * keep
    return l1_rescale(delta, kept) if rescale else kept


def elect_sign(weighted: torch.Tensor) -> torch.Tensor:
    """Per parameter, which models agree with the sign of the summed mass
    (TIES's sign election; a zero sum elects +). Bool (K, *shape); a zero
    (trimmed) entry never agrees."""
    majority = torch.where(weighted.sum(dim=0) >= 0, 1.0, -1.0).to(weighted.dtype)
    return weighted.sign() == majority


def combine_deltas(
    deltas: torch.Tensor,
    weights: torch.Tensor,
    consensus: bool,
    normalize: bool,
    lam: float,
) -> torch.Tensor:
    """The merged task vector from (K, *shape) deltas (mergekit GTA): weighted
    sum, over sign-agreeing entries only when ``consensus`` (TIES's disjoint
    mean when ``normalize``), divided by the weights that took part, times
    ``lam``."""
    w = _expand(weights.to(deltas.dtype), deltas)
    weighted = deltas * w
    if consensus:
        agree = elect_sign(weighted).to(deltas.dtype)
        mixed = (weighted * agree).sum(dim=0)
        divisor = (w * agree).sum(dim=0)
        divisor[divisor == 0] = 1
    else:
        mixed = weighted.sum(dim=0)
        divisor = w.sum(dim=0)
        divisor[divisor.abs() < 1e-8] = 1
    if normalize:
        mixed = mixed / divisor
    if lam != 1:
        mixed = mixed * lam
    return mixed


def _minmax(x: torch.Tensor) -> torch.Tensor:
    """Per row (dim 1) scaled to [0, 1]; a constant row gives 0 (x - lo is 0
    there, divided by 1). One new tensor, divided in place."""
    lo = x.min(dim=1, keepdim=True).values
    span = x.max(dim=1, keepdim=True).values - lo
    return (x - lo).div_(torch.where(span > 0, span, 1))


def _clamp_bounds(mag: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """PCB's outlier clamp of one row: its sorted-order values at index
    ``int(d * ratio)`` from the bottom and ``int(d * (1 - ratio)) - 1`` from
    the top."""
    d = mag.numel()
    lo_k = min(int(d * ratio), d - 1)
    hi_k = max(min(int(d * (1 - ratio)) - 1, d - 1), 0)
    lo, hi = _order_stats(mag, [lo_k, hi_k])
    return lo, mag.max() if hi_k == d - 1 else hi


def _score_floor(score: torch.Tensor, density: float) -> torch.Tensor:
    """The (1 - density) order statistic of a row of scores: entries below it
    get scale 0."""
    (t,) = _order_stats(
        score, [min(int(score.numel() * (1 - density)), score.numel() - 1)]
    )
    return t


def _pcb_row(
    row: torch.Tensor, total: torch.Tensor, k: int, clamp_ratio: float, density: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One task's (clamped delta, scale) from its delta ``row`` (d,) and the sum
    of all K deltas ``total`` (d,), whole-row (the readable form; ``pcb_merge``
    streams the same arithmetic)."""
    mag = row.abs()
    lo, hi = _clamp_bounds(mag, clamp_ratio)
    mag = torch.maximum(torch.minimum(mag, hi), lo).unsqueeze(0)
    clamped = row.sign().mul_(mag[0])
    intra = _minmax(mag).pow_(2).mul_(k).exp_()
    del mag
    score = intra.mul_(row.mul(total).tanh_())[0]
    del intra
    floor, top = _score_floor(score, density), score.max()
    scale = _minmax(torch.maximum(torch.minimum(score, top), floor).unsqueeze(0))
    return clamped, scale[0]


def pcb_balance(
    deltas: torch.Tensor, densities: list[float], clamp_ratio: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """PCB (Du et al. 2024): from (K, d) task vectors, (clamped deltas, scale).

    Intra-balancing: exp(K * minmax(|tau_i|)^2), importance within a task.
    Inter-balancing: tanh(tau_i * sum_j tau_j), agreement across tasks.
    Their product is clamped below at each task's (1 - density) quantile and
    min-max scaled, so the lowest-scoring (1 - density) entries get scale 0."""
    k = deltas.shape[0]
    total = deltas.sum(dim=0)
    rows = [_pcb_row(deltas[i], total, k, clamp_ratio, densities[i]) for i in range(k)]
    return torch.stack([c for c, _ in rows]), torch.stack([s for _, s in rows])


PCB_CHUNK = 1 << 20  # elements per elementwise step of pcb_merge


def _order_stats(x: torch.Tensor, ks: list[int]) -> list[torch.Tensor]:
    """The ``k``-th smallest values (0-based) of a 1-D tensor, from one
    partitioned float copy (numpy's introselect; ``kthvalue`` also allocates an
    int64 index per element). The values equal ``kthvalue``'s."""
    import numpy as np

    wide = x if x.dtype in (torch.float32, torch.float64) else x.float()
    part = np.partition(wide.numpy(), ks)
    return [torch.tensor(part[k]).to(x.dtype) for k in ks]


def _pcb_task(
    row: torch.Tensor,
    total: torch.Tensor,
    k: int,
    clamp_ratio: float,
    density: float,
    weight: torch.Tensor,
    merged: torch.Tensor,
    den: torch.Tensor,
) -> None:
    """Add one task's ``w_i s_i tau_i`` to ``merged`` and ``s_i`` to ``den``:
    ``_pcb_row``'s arithmetic, op for op, with the row-wide order statistics
    and extremes taken first and the elementwise steps done PCB_CHUNK
    elements at a time, so a task needs one (d,) score buffer and the
    partition copy. The extremes of the clamped magnitudes are the clamp
    bounds themselves (order statistics of the row)."""
    d = row.numel()
    lo, hi = _clamp_bounds(row.abs(), clamp_ratio)
    span = hi - lo
    span = torch.where(span > 0, span, 1)
    score = torch.empty_like(row)
    for a in range(0, d, PCB_CHUNK):
        r = row[a : a + PCB_CHUNK]
        m = torch.maximum(torch.minimum(r.abs(), hi), lo)
        intra = (m - lo).div_(span).pow_(2).mul_(k).exp_()
        score[a : a + PCB_CHUNK] = intra.mul_(r.mul(total[a : a + PCB_CHUNK]).tanh_())
    t, top = _score_floor(score, density), score.max()
    s_lo = torch.maximum(torch.minimum(score.min(), top), t)  # clamped row's min
    s_span = top - s_lo
    s_span = torch.where(s_span > 0, s_span, 1)
    for a in range(0, d, PCB_CHUNK):
        r = row[a : a + PCB_CHUNK]
        m = torch.maximum(torch.minimum(r.abs(), hi), lo)
        clamped = r.sign().mul_(m)
        sc = torch.maximum(torch.minimum(score[a : a + PCB_CHUNK], top), t)
        sc = (sc - s_lo).div_(s_span)
        merged[a : a + PCB_CHUNK].add_(clamped.mul_(weight).mul_(sc))
        den[a : a + PCB_CHUNK].add_(sc)


def pcb_merge(
    deltas: torch.Tensor,
    weights: torch.Tensor,
    densities: list[float],
    clamp_ratio: float,
    lam: float,
) -> torch.Tensor:
    """The PCB-merged task vector: sum_i w_i s_i tau_i / sum_i s_i, times lam.
    Task by task and chunk by chunk (``_pcb_task``), accumulated: beside the
    (K, d) deltas the peak is about two (d,) vectors, not the K-fold scores
    and clamped copies; equal to ``pcb_balance``'s whole-stack formula."""
    shape = deltas.shape[1:]
    flat = deltas.reshape(deltas.shape[0], -1)
    k = flat.shape[0]
    total = flat.sum(dim=0)
    w = weights.to(flat.dtype)
    # sums accumulate in at least float32 and round once, as torch's sum does
    acc = torch.promote_types(flat.dtype, torch.float32)
    merged = torch.zeros_like(total, dtype=acc)
    den = torch.zeros_like(total, dtype=acc)
    for i in range(k):
        _pcb_task(flat[i], total, k, clamp_ratio, densities[i], w[i], merged, den)
    out = merged.to(flat.dtype).div_(den.to(flat.dtype).clamp_(min=1e-12))
    return (lam * out).reshape(shape)
