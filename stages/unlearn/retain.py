"""The retain side shared by GradDiff, NPO and SimNPO: the ``retain`` input,
its loss (NLL or KL to the input model) and the two weights
(OpenUnlearning's ``alpha`` = retain_weight, ``gamma`` = forget_weight)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input
from stages.unlearn import Params as UnlearnParams


class RetainParams(UnlearnParams):
    """Methods with a forget term plus an optional retain term."""

    retain: str | None = Input(
        "dataset",
        "Upstream dataset stage whose data.jsonl is kept (read unless "
        "retain_loss is none).",
        default=None,
    )
    retain_loss: Literal["none", "nll", "kl"] = Field(
        "nll",
        description="Retain term: `nll` on retain records, `kl` = KL(input model "
        "‖ model) on their responses, `none` = forget term only.",
    )
    retain_weight: float = Field(1.0, ge=0, description="Weight of the retain term.")
    forget_weight: float = Field(1.0, gt=0, description="Weight of the forget term.")

    @model_validator(mode="after")
    def _retain_iff_term(self) -> RetainParams:
        if self.retain_loss != "none" and self.retain is None:
            raise ValueError(
                f"retain: retain_loss '{self.retain_loss}' needs a retain set; set "
                "`retain: <dataset stage>` or retain_loss: none"
            )
        if self.retain_loss == "none" and self.retain is not None:
            raise ValueError(
                "retain: retain_loss 'none' reads no retain set; remove `retain` "
                "or choose retain_loss: nll / kl"
            )
        return self


def forward_logp(model: Any, batch: dict[str, Any], prefix: str = "") -> tuple:
    """Logits and per-sequence (log π, response tokens) of one side of a batch."""
    from stages.unlearn.losses import sequence_logprob

    logits = model(
        input_ids=batch[f"{prefix}input_ids"],
        attention_mask=batch[f"{prefix}attention_mask"],
    ).logits  # (B, T, V)
    return (logits, *sequence_logprob(logits, batch[f"{prefix}labels"]))


def retain_term(
    params: RetainParams, model: Any, batch: dict[str, Any], setup: Any
) -> tuple[Any, dict[str, Any]]:
    """(weighted retain loss or 0, logs) for the retain half of ``batch``."""
    import torch

    from stages.unlearn.losses import response_kl, response_nll

    if params.retain_loss == "none":
        return torch.zeros((), device=batch["input_ids"].device), {}
    logits, logp, n = forward_logp(model, batch, "retain_")
    nll = response_nll(logp, n)
    logs = {"retain_nll": nll.detach()}
    if params.retain_loss == "nll":
        return params.retain_weight * nll, logs
    with torch.no_grad():
        ref = setup.reference()(
            input_ids=batch["retain_input_ids"],
            attention_mask=batch["retain_attention_mask"],
        ).logits
    kl = response_kl(logits, ref, batch["retain_labels"])
    logs["retain_kl"] = kl.detach()
    return params.retain_weight * kl, logs
