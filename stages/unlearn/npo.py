"""NPO, Negative Preference Optimization (Zhang et al. 2024): the DPO loss with
only a losing response, (2/β)·log(1 + (π_θ/π_ref)^β) on forget sequences, plus
an optional retain term. π_ref is the input model; its forget log-likelihoods
are computed once before training and cached in the checkpoint folder.

Params: beta, retain, retain_loss (none | nll | kl), retain_weight, forget_weight.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.unlearn.retain import RetainParams


class Params(RetainParams):
    method: Literal["npo"] = Field("npo", description="NPO.")
    beta: float = Field(
        0.1, gt=0, description="Inverse temperature β (β → 0 recovers GA)."
    )


def make_loss(params: Params, setup: Any) -> Any:
    from stages.unlearn.losses import npo_loss, response_nll
    from stages.unlearn.retain import forward_logp, retain_term

    ref_logp = setup.ref_logps()  # (N_forget,), from the untouched input weights

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        _, logp, n = forward_logp(model, batch)
        ref = ref_logp[batch["forget_index"].cpu()].to(logp.device)
        forget = npo_loss(logp, ref, params.beta)
        retain, logs = retain_term(params, model, batch, setup)
        logs.update(forget_nll=response_nll(logp, n).detach(), npo=forget.detach())
        return params.forget_weight * forget + retain, logs

    return loss_fn
