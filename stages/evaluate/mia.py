"""Membership inference and memorisation scores as pure functions (MUSE,
Shi et al. 2024; Min-K% Prob, Shi et al. 2023; Min-K%++, Zhang et al. 2024).

Scores are "member-likeness": higher means more likely trained on. AUC is
scikit-learn's ROC AUC with members (the forget set) as the positive class;
ROUGE-L is the ``rouge-score`` package's F-measure (OpenUnlearning's
``rougeL_f1``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any


def min_k(token_logps: Sequence[float], k: float) -> float:
    """Mean of the lowest ``k`` fraction (at least one) of the token log-probs."""
    vals = sorted(float(x) for x in token_logps)
    if not vals:
        return 0.0
    n = max(1, int(len(vals) * k))
    return sum(vals[:n]) / n


def min_k_plus_plus(
    token_logps: Sequence[float], mu: Sequence[float], var: Sequence[float], k: float
) -> float:
    """Min-K%++: each token's log-prob standardised by the mean ``mu`` and
    variance ``var`` of log p under the model's own next-token distribution,
    then the mean of the lowest ``k`` fraction."""
    z = [
        (float(x) - float(m)) / math.sqrt(max(float(v), 1e-6))
        for x, m, v in zip(token_logps, mu, var, strict=True)
    ]
    return min_k(z, k)


def token_stats(logits: Any, targets: Any) -> tuple[Any, Any, Any]:
    """Per-position log p(target), E[log p] and Var[log p] under softmax(logits):
    logits (T, V), targets (T,) -> three (T,) tensors."""
    import torch

    logp = torch.log_softmax(logits.double(), dim=-1)  # (T, V)
    p = logp.exp()
    tgt = logp.gather(-1, targets[:, None]).squeeze(-1)
    mu = (p * logp).sum(-1)
    var = (p * logp.square()).sum(-1) - mu.square()
    return tgt, mu, var


def auc(members: Sequence[float], nonmembers: Sequence[float]) -> float:
    """ROC AUC of telling members (label 1) from non-members by score."""
    from sklearn.metrics import roc_auc_score

    if not members or not nonmembers:
        return float("nan")
    y = [1] * len(members) + [0] * len(nonmembers)
    return float(roc_auc_score(y, list(members) + list(nonmembers)))


def privleak(auc_model: float, auc_oracle: float) -> float:
    """MUSE PrivLeak in percent: (AUC - AUC_oracle) / AUC_oracle · 100. Near 0 is
    a good unlearning; > 0 leaks membership (under-unlearning), < 0 is
    over-unlearning (forget records look *less* familiar than unseen ones)."""
    return (auc_model - auc_oracle) / auc_oracle * 100.0


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (rouge-score, no stemming)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=False)
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def group_counts(
    rng: Any, groups: Sequence[Any] | None, n: int, n_resamples: int
) -> Any:
    """How often each of ``n`` items is drawn in each of ``n_resamples``
    bootstrap resamples, (B, n): items resampled one by one (``groups`` None),
    or whole groups (a cluster bootstrap: a group's items share one draw count,
    so items that are not independent, such as the records of one person,
    do not pass for independent evidence)."""
    import numpy as np

    if groups is None:
        return rng.multinomial(n, [1 / n] * n, size=n_resamples)
    if len(groups) != n:
        raise ValueError(f"groups: {len(groups)} labels for {n} scores")
    slot = {g: i for i, g in enumerate(sorted(set(groups), key=str))}
    index = np.asarray([slot[g] for g in groups])
    k = len(slot)
    return rng.multinomial(k, [1 / k] * k, size=n_resamples)[:, index]


def cluster_bootstrap(
    values: Sequence[float],
    groups: Sequence[Any],
    seed: Any = 0,
    n_resamples: int = 2000,
) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of ``values`` whose records
    come in ``groups`` (e.g. the person each fact is about): whole groups are
    resampled, so correlated records of one group do not narrow the
    interval as independent ones would."""
    import numpy as np

    vals = np.asarray(values, dtype=np.float64)
    if not len(vals):
        return float("nan"), float("nan")
    counts = group_counts(np.random.default_rng(seed), groups, len(vals), n_resamples)
    return percentile_interval(counts @ vals / counts.sum(1))


def bootstrap_aucs(
    members: Any,
    nonmembers: Any,
    seed: Any,
    n_resamples: int = 2000,
    member_groups: Sequence[Any] | None = None,
    nonmember_groups: Sequence[Any] | None = None,
) -> Any:
    """ROC AUC of each of K scorers under the same ``n_resamples`` bootstrap
    resamples of members and non-members (drawn separately): members (K, P),
    nonmembers (K, N) -> (K, B). The same resamples for every scorer make
    differences between them paired. With ``*_groups`` (one label per record,
    e.g. the person a fact is about) whole groups are resampled
    (``group_counts``). AUC is the Mann-Whitney statistic (what
    ``roc_auc_score`` computes, ties count 1/2), from the resample counts:
    c_pᵀ·[s_p > s_n + ½·(s_p = s_n)]·c_n / (Σc_p·Σc_n)."""
    import numpy as np

    pos = np.asarray(members, dtype=np.float64)
    neg = np.asarray(nonmembers, dtype=np.float64)
    wins = (pos[:, :, None] > neg[:, None, :]) + 0.5 * (
        pos[:, :, None] == neg[:, None, :]
    )  # (K, P, N)
    rng = np.random.default_rng(seed)
    c_pos = group_counts(rng, member_groups, pos.shape[1], n_resamples)  # (B, P)
    c_neg = group_counts(rng, nonmember_groups, neg.shape[1], n_resamples)  # (B, N)
    norm = c_pos.sum(1) * c_neg.sum(1)  # (B,)
    return np.einsum("bp,kpn,bn->kb", c_pos, wins, c_neg) / norm


def percentile_interval(values: Any, confidence: float = 0.95) -> tuple[float, float]:
    """Central ``confidence`` percentile interval of the finite bootstrap values
    (a ratio is undefined on a resample whose denominator is 0)."""
    import numpy as np

    vals = np.asarray(values, dtype=np.float64)
    vals = vals[np.isfinite(vals)]
    if not len(vals):
        return float("nan"), float("nan")
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(vals, [alpha, 1 - alpha])
    return float(lo), float(hi)
