"""GradDiff: gradient ascent on the forget set plus descent on the retain set
(Liu et al. 2022; OpenUnlearning's GradDiff): forget_weight·(-NLL_forget) +
retain_weight·(NLL or KL on retain).

Params: retain, retain_loss (nll | kl), retain_weight, forget_weight.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.unlearn.retain import RetainParams


class Params(RetainParams):
    method: Literal["grad_diff"] = Field("grad_diff", description="GA + retain NLL.")
    retain_loss: Literal["nll", "kl"] = Field(
        "nll", description="Retain term: `nll` on retain records or `kl` to the input."
    )


def make_loss(params: Params, setup: Any) -> Any:
    from stages.unlearn.losses import ga_loss, response_nll
    from stages.unlearn.retain import forward_logp, retain_term

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        _, logp, n = forward_logp(model, batch)
        retain, logs = retain_term(params, model, batch, setup)
        logs["forget_nll"] = response_nll(logp, n).detach()
        return params.forget_weight * ga_loss(logp, n) + retain, logs

    return loss_fn
