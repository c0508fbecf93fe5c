"""Full fine-tuning on the response tokens, pruned weights held at zero.

The loss is next-token cross-entropy on response tokens only (the template of
``stages.common.text``); sparse fine-tuning keeps the pruning mask as in
SparseGPT / Wanda recovery experiments.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stages.recover import Params as RecoverParams


class Params(RecoverParams):
    method: Literal["full"] = Field("full", description="Full fine-tune.")


def wrap(params: Params, model: Any, masks: dict[str, Any]) -> Any:
    """Every parameter trains; masks are enforced by the runtime."""
    for p in model.parameters():
        p.requires_grad_(True)
    return model


def make_loss(params: Params, teacher: Any) -> Any:
    """Next-token cross-entropy on response tokens."""
    from stages.recover.losses import response_nll

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits  # (B, T, V)
        return response_nll(logits, batch["labels"]), {}

    return loss_fn


def unwrap(
    params: Params, model: Any, masks: dict[str, Any], out_dir: Path
) -> tuple[Any, dict[str, float]]:
    return model, {}
