"""Logit distillation from the unpruned teacher (Hinton et al., 2015), optionally
on a TAID schedule (Shing et al., 2025).

TAID moves the target from the student's own distribution toward the
teacher's over training.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input
from stages.recover import Params as RecoverParams


class Params(RecoverParams):
    method: Literal["distill"] = Field("distill", description="Logit distillation.")
    teacher: str = Input(
        "model", "Upstream stage of the unpruned teacher model, e.g. `base`."
    )
    temperature: float = Field(
        2.0,
        gt=0,
        description="Softmax temperature T of both distributions (loss scaled by T²).",
    )
    kd_weight: float = Field(
        0.5, ge=0, le=1, description="Loss = kd_weight·KL + (1-kd_weight)·LM loss."
    )
    taid: bool = Field(
        False,
        description="Distill toward the TAID interpolation "
        "(1-t)·student + t·teacher instead of the teacher.",
    )
    taid_start: float = Field(0.4, ge=0, le=1, description="TAID t at the first step.")
    taid_end: float = Field(1.0, ge=0, le=1, description="TAID t at the last step.")

    @model_validator(mode="after")
    def _need_teacher(self) -> Params:
        if self.taid and self.taid_end < self.taid_start:
            raise ValueError(
                "taid_end must be >= taid_start: the target moves toward the teacher"
            )
        return self


def wrap(params: Params, model: Any, masks: dict[str, Any]) -> Any:
    from stages.recover.full import wrap as full_wrap

    return full_wrap(params, model, masks)  # type: ignore[arg-type]


def make_loss(params: Params, teacher: Any) -> Any:
    """kd_weight · T²·KL(target ‖ student) + (1 - kd_weight) · LM, response only."""
    import torch

    from stages.recover.losses import (
        kd_kl,
        response_logits,
        response_nll,
        taid_t,
        taid_target,
    )

    if teacher is None:
        raise ValueError("teacher: distill was given no teacher model")

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        ids, att, labels = batch["input_ids"], batch["attention_mask"], batch["labels"]
        logits = model(input_ids=ids, attention_mask=att).logits  # (B, T, V)
        with torch.no_grad():
            t_logits = teacher(input_ids=ids, attention_mask=att).logits
        s_sel, _ = response_logits(logits, labels)  # (N, V)
        t_sel, _ = response_logits(t_logits, labels)
        logs: dict[str, Any] = {}
        if params.taid:
            t = taid_t(info.progress, params.taid_start, params.taid_end)
            t_sel = taid_target(s_sel, t_sel, t)
            logs["taid_t"] = torch.tensor(t, device=logits.device)
        kd = kd_kl(s_sel, t_sel, params.temperature)
        lm = response_nll(logits, labels)
        loss = params.kd_weight * kd + (1.0 - params.kd_weight) * lm
        logs.update(kd_loss=kd.detach(), lm_loss=lm.detach())
        return loss, logs

    return loss_fn


def unwrap(
    params: Params, model: Any, masks: dict[str, Any], out_dir: Path
) -> tuple[Any, dict[str, float]]:
    return model, {}
