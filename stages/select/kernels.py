"""Pure tensor kernels for selection scores: Jensen–Shannon divergence between
next-token distributions (PASER's degradation measure, He et al., arXiv
2502.12594) and per-sample response NLL (perplexity and IFD baselines, Li et
al., "From Quantity to Quality", 2023). No I/O, no device choices.
"""

from __future__ import annotations

import math
from typing import Any

IGNORE_INDEX = -100
LN2 = math.log(2.0)


def _kl_to(logp: Any, logm: Any) -> Any:
    """KL(P || M) over the last axis from log-probs; 0·log 0 terms count as 0."""
    import torch

    p = logp.exp()
    return torch.where(p > 0, p * (logp - logm), torch.zeros_like(p)).sum(-1)


def jsd(logp: Any, logq: Any) -> Any:
    """Jensen–Shannon divergence (nats, in [0, ln 2]) between rows of log-probs
    (..., V): ½KL(P‖M) + ½KL(Q‖M), M = ½(P+Q), with log M = logaddexp - ln 2
    so zeros and tiny probabilities stay finite."""
    import torch

    logm = torch.logaddexp(logp, logq) - LN2
    return (0.5 * (_kl_to(logp, logm) + _kl_to(logq, logm))).clamp(0.0, LN2)


def response_positions(labels: Any) -> Any:
    """Bool (B, T-1): logits at t predict token t+1, which is a response token."""
    return labels[:, 1:] != IGNORE_INDEX


def per_sample_mean(values: Any, mask: Any) -> Any:
    """Mean of ``values`` (M,) taken at ``mask``'s True entries, per row of
    ``mask`` (B, T'); rows without any True give 0."""
    import torch

    rows = mask.nonzero(as_tuple=True)[0]
    b = mask.shape[0]
    total = torch.zeros(b, dtype=values.dtype, device=values.device)
    total.index_add_(0, rows, values)
    count = mask.sum(1).to(values.dtype)
    return total / count.clamp_min(1)


def response_jsd(logits_ref: Any, logits_pruned: Any, labels: Any) -> Any:
    """Per-sample JSD between two models' next-token distributions, averaged
    over the response tokens (B,). Logits (B, T, V); labels (B, T) with -100
    outside the response."""
    import torch

    mask = response_positions(labels)
    lo = torch.log_softmax(logits_ref[:, :-1][mask].float(), dim=-1)  # (M, V)
    lp = torch.log_softmax(logits_pruned[:, :-1][mask].float(), dim=-1)
    return per_sample_mean(jsd(lo, lp), mask)


def response_nll(logits: Any, labels: Any) -> Any:
    """Per-sample mean negative log-likelihood of the response tokens (B,)."""
    import torch

    mask = response_positions(labels)
    sel = logits[:, :-1][mask].float()  # (M, V)
    tgt = labels[:, 1:][mask]
    nll = torch.nn.functional.cross_entropy(sel, tgt, reduction="none")
    return per_sample_mean(nll, mask)


def ies(jsd_scores: Any, n_tokens: Any) -> Any:
    """Individual Efficiency Score JSD / log(cost), cost = (tokens)²
    (prompt + response tokens); lengths below 2 are clamped to avoid log 1 = 0."""
    import numpy as np

    n = np.maximum(np.asarray(n_tokens, dtype=np.float64), 2.0)
    return np.asarray(jsd_scores, dtype=np.float64) / np.log(n**2)


def response_pair_scores(logits_ref: Any, logits_pruned: Any, labels: Any) -> Any:
    """Per-sample (JSD, NLL under the reference, NLL under the pruned model),
    each averaged over the response tokens, from one teacher-forced pass of
    both models: (B, 3). Column 0 equals :func:`response_jsd`; columns 1-2
    equal :func:`response_nll` of each model."""
    import torch

    mask = response_positions(labels)
    lo = torch.log_softmax(logits_ref[:, :-1][mask].float(), dim=-1)  # (M, V)
    lp = torch.log_softmax(logits_pruned[:, :-1][mask].float(), dim=-1)
    tgt = labels[:, 1:][mask][:, None]
    cols = (jsd(lo, lp), -lo.gather(1, tgt)[:, 0], -lp.gather(1, tgt)[:, 0])
    return torch.stack([per_sample_mean(c, mask) for c in cols], dim=1)
