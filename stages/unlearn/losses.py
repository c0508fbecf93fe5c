"""Unlearning losses as pure tensor functions.

Sequence log-likelihoods are sums over response tokens (labels ``-100``
elsewhere, the template of ``stages.common.text``), as OpenUnlearning's
``compute_batch_nll``. Shapes: logits (B, T, V), labels (B, T), per-sequence
values (B,), activations (B, T, D).
"""

from __future__ import annotations

from typing import Any

from stages.common.text import IGNORE_INDEX


def sequence_logprob(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Summed log π(y|x) over each row's response tokens and their count: (B,), (B,)."""
    import torch

    shift_logits = logits[:, :-1, :].float()  # position t predicts token t+1
    shift_labels = labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX  # (B, T-1)
    logp = torch.log_softmax(shift_logits, dim=-1)
    tgt = shift_labels.clamp_min(0).unsqueeze(-1)
    tok = logp.gather(-1, tgt).squeeze(-1) * keep  # (B, T-1)
    return tok.sum(-1), keep.sum(-1)


def ga_loss(logp: Any, n_tokens: Any) -> Any:
    """Gradient ascent: minus the mean token NLL of the forget batch, i.e. the
    forget-set likelihood pushed down (its value is -NLL, so it falls)."""
    return logp.sum() / n_tokens.sum().clamp_min(1)


def npo_loss(logp: Any, ref_logp: Any, beta: float) -> Any:
    """NPO (Zhang et al. 2024): (2/β) · mean log(1 + (π_θ/π_ref)^β).

    Written as -(2/β) · logsigmoid(-β · (log π_θ - log π_ref)), which is the
    same function, numerically stable. As β → 0 its gradient tends to that of
    GA on the summed sequence log-likelihood (the β→0 limit in the paper).
    """
    import torch.nn.functional as F

    log_ratio = logp - ref_logp.to(logp)
    return (-2.0 / beta) * F.logsigmoid(-beta * log_ratio).mean()


def simnpo_loss(logp: Any, n_tokens: Any, beta: float, gamma: float) -> Any:
    """SimNPO (Fan et al. 2024): reference-free, length-normalised NPO,
    -(2/β) · mean logsigmoid(β · (NLL/|y| - γ)) with NLL/|y| = -log π / |y|.

    ``gamma`` is the margin in NLL units (OpenUnlearning's ``delta``).
    """
    import torch.nn.functional as F

    nll_per_token = -logp / n_tokens.clamp_min(1).to(logp)
    return (-2.0 / beta) * F.logsigmoid(beta * (nll_per_token - gamma)).mean()


def response_nll(logp: Any, n_tokens: Any) -> Any:
    """Mean token NLL of a batch from its per-sequence sums (the retain term)."""
    return -logp.sum() / n_tokens.sum().clamp_min(1)


def response_kl(logits: Any, ref_logits: Any, labels: Any) -> Any:
    """KL(π_ref ‖ π_θ) per response token, averaged (the KL retain term)."""
    import torch

    keep = labels[:, 1:] != IGNORE_INDEX  # (B, T-1)
    log_q = torch.log_softmax(logits[:, :-1, :].float(), dim=-1)[keep]  # (N, V)
    log_p = torch.log_softmax(ref_logits[:, :-1, :].float(), dim=-1)[keep]
    return (log_p.exp() * (log_p - log_q)).sum(-1).mean()


def control_vector(dim: int, coeff: float, generator: Any) -> Any:
    """WMDP's steering target: a uniform [0, 1) random direction of norm ``coeff``."""
    import torch

    u = torch.rand(1, 1, dim, generator=generator)
    return u / u.norm() * coeff


def activation_mse(acts: Any, target: Any, mask: Any) -> Any:
    """Mean over masked positions of the per-position mean squared error over
    features (OpenUnlearning's RMU ``compute_activation_loss``)."""
    sq = (acts.float() - target.float().expand_as(acts)) ** 2  # (B, T, D)
    m = mask.to(sq)
    per_row = (sq.mean(-1) * m).sum(-1) / m.sum(-1).clamp_min(1)  # (B,)
    return per_row.mean()
