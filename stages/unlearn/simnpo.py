"""SimNPO (Fan et al. 2024, "Simplicity Prevails"): reference-free NPO on the
length-normalised log-likelihood with a margin γ,
-(2/β)·logσ(β·(NLL/|y| - γ)), plus an optional retain term.

Params: beta, gamma, retain, retain_loss, retain_weight, forget_weight.
Defaults follow OpenUnlearning's SimNPO config (β 4.5, forget weight 0.125).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.unlearn.retain import RetainParams


class Params(RetainParams):
    method: Literal["simnpo"] = Field("simnpo", description="SimNPO.")
    beta: float = Field(4.5, gt=0, description="Inverse temperature β.")
    gamma: float = Field(
        0.0, ge=0, description="Margin γ on the per-token NLL (OpenUnlearning delta)."
    )
    forget_weight: float = Field(
        0.125, gt=0, description="Weight of the forget term (npo_coeff)."
    )


def make_loss(params: Params, setup: Any) -> Any:
    from stages.unlearn.losses import response_nll, simnpo_loss
    from stages.unlearn.retain import forward_logp, retain_term

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        _, logp, n = forward_logp(model, batch)
        forget = simnpo_loss(logp, n, params.beta, params.gamma)
        retain, logs = retain_term(params, model, batch, setup)
        logs.update(forget_nll=response_nll(logp, n).detach(), simnpo=forget.detach())
        return params.forget_weight * forget + retain, logs

    return loss_fn
