"""Gradient ascent on the forget set: maximise its NLL (Jang et al. 2023;
the GA baseline of NPO and MUSE). Collapses quickly; no retain term.

Params: the kind's (model, forget, training fields).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.unlearn import Params as UnlearnParams


class Params(UnlearnParams):
    method: Literal["ga"] = Field("ga", description="Gradient ascent.")


def make_loss(params: Params, setup: Any) -> Any:
    """-(mean token NLL) of the forget batch."""
    from stages.unlearn.losses import ga_loss, response_nll
    from stages.unlearn.retain import forward_logp

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        _, logp, n = forward_logp(model, batch)
        return ga_loss(logp, n), {"forget_nll": response_nll(logp, n).detach()}

    return loss_fn
