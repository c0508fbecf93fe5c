"""Recovery losses as pure tensor functions over logits and labels.

Labels follow ``stages.common.text``: ``-100`` everywhere but the response, so
every loss here is computed on response tokens only, exactly the tokens the
selection stage scores. Shapes: logits (B, T, V), labels (B, T).
"""

from __future__ import annotations

from typing import Any

from stages.common.text import IGNORE_INDEX


def response_logits(logits: Any, labels: Any) -> tuple[Any, Any]:
    """Logits that predict a response token and those tokens: (N, V), (N,)."""
    shift_logits = logits[:, :-1, :]  # position t predicts token t+1
    shift_labels = labels[:, 1:]
    keep = shift_labels != IGNORE_INDEX
    return shift_logits[keep], shift_labels[keep]


def response_nll(logits: Any, labels: Any) -> Any:
    """Mean next-token cross-entropy over response tokens (fp32)."""
    import torch.nn.functional as F

    sel, tgt = response_logits(logits, labels)
    return F.cross_entropy(sel.float(), tgt)


def kd_kl(student: Any, target: Any, temperature: float) -> Any:
    """T² · KL(target ‖ student) per token, averaged; inputs (N, V) logits.

    Hinton et al. 2015: soften both with temperature T, scale by T² so the
    gradient magnitude does not shrink with T.
    """
    import torch.nn.functional as F

    t = float(temperature)
    log_q = F.log_softmax(student.float() / t, dim=-1)
    log_p = F.log_softmax(target.float() / t, dim=-1)
    kl = (log_p.exp() * (log_p - log_q)).sum(-1)  # (N,)
    return kl.mean() * t * t


def taid_target(student: Any, teacher: Any, t: float) -> Any:
    """TAID intermediate target logits: (1-t)·stopgrad(student) + t·teacher.

    Shing et al. 2025, "TAID: Temporally Adaptive Interpolated Distillation":
    the target moves from the student's own distribution (t=0) to the
    teacher's (t=1) over training.
    """
    return (1.0 - t) * student.detach().float() + t * teacher.float()


def taid_t(progress: float, start: float, end: float) -> float:
    """Interpolation coefficient at training progress in [0, 1] (linear ramp)."""
    p = min(1.0, max(0.0, progress))
    return start + (end - start) * p
