"""recover: train a pruned model back (full fine-tune, LoRA or distillation),
keeping its sparsity pattern, in-process or under the DeepSpeed launcher.

Checkpoints go to ``ctx.checkpoint_dir`` (the engine's ``checkpoints/<name>``,
persisted by DVC); a killed run resumes from the last one.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipelines.contract import Input, Kind, Registry, RunContext, StageResult
from stages.common.templates import (
    TEMPLATE_DESCRIPTION,
    TRAIN_ON_INPUTS_DESCRIPTION,
    check_template,
)
from stages.common.train.params import TrainParams

DEFAULT_METHOD = "full"
BUILDER = "stages.recover.task:build"  # builds the TrainTask on every rank


class Params(TrainParams):
    """Fields every recover method accepts."""

    method: str = Field(DEFAULT_METHOD, description="Recovery method (`carp methods`).")
    model: str = Input("model", "Upstream stage whose (pruned) model is trained.")
    data: str = Input("dataset", "Upstream stage whose data.jsonl is trained on.")
    mask: Literal["keep", "infer", "none"] = Field(
        "keep",
        description="`keep`: zeros named by masks.safetensors stay zero; "
        "`infer`: every exact zero of a 2-D weight stays zero (inputs without a "
        "mask file); `none`: train dense.",
    )

    template: str | None = Field(None, description=TEMPLATE_DESCRIPTION)
    train_on_inputs: bool = Field(False, description=TRAIN_ON_INPUTS_DESCRIPTION)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return check_template(v)


def extra_provides(params: Params) -> frozenset[str]:
    """A LoRA stage with ``save_adapter: true`` also provides an adapter."""
    return (
        frozenset({"adapter"})
        if getattr(params, "save_adapter", False)
        else frozenset()
    )


def retries(params: Params) -> int:
    """Prefect retries: a DeepSpeed launch can lose a rank or its port, and the
    retry resumes from the last checkpoint; in-process training would fail the
    same way again."""
    return 1 if params.launcher == "deepspeed" else 0


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Train ``inputs['model']`` on ``inputs['data']``; write an HF checkpoint
    (+ masks.safetensors for sparse inputs), a loss curve and metrics."""
    from stages.common.train.launch import run_training

    metrics, _, plots, reports = run_training(
        BUILDER, "recover", params, inputs, out_dir, ctx
    )
    summary = (
        f"recover/{params.method}: {metrics['steps']:.0f} steps, loss "
        f"{metrics['first_loss']:.3f} -> {metrics['final_loss']:.3f}, "
        f"{metrics['train_tokens_per_s']:.0f} tokens/s"
    )
    return StageResult(
        metrics=metrics,
        plots=plots,
        reports=reports,
        summary=summary,
        extra_manifest={
            "recover": {"adapter": bool(getattr(params, "save_adapter", False))}
        },
    )


METHODS = Registry(
    "recover method",
    {
        "full": "stages.recover.full",
        "lora": "stages.recover.lora",
        "distill": "stages.recover.distill",
    },
    base=Params,
    entry="wrap",
)
KIND = Kind(
    name="recover",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model"}),
    default_method=DEFAULT_METHOD,
    resumable=True,
    plot_props={"x": "step", "y": "loss"},  # loss.csv (write_curve)
    extra_provides=extra_provides,
    retries=retries,
)
