"""unlearn: make a model forget a dataset while keeping another (GA, GradDiff,
NPO, SimNPO, RMU), keeping its sparsity pattern, in-process or under the
DeepSpeed launcher, on the training runtime ``recover`` uses
(``stages.common.train``: the loss is a function passed in).

Inputs: ``model``, ``forget`` (a dataset artifact: one training example per
record) and, on the methods that read it, ``retain``. A world's
``forget.jsonl`` / ``retain.jsonl`` become dataset artifacts through the
``dataset`` kind (``{kind: dataset, world: world, split: forget}``).
Checkpoints go to ``ctx.checkpoint_dir``; a killed run resumes from the last one.
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

DEFAULT_METHOD = "npo"
BUILDER = "stages.unlearn.task:build"  # builds the TrainTask on every rank


class Params(TrainParams):
    """Fields every unlearning method accepts (training fields as recover)."""

    method: str = Field(
        DEFAULT_METHOD, description="Unlearning method (`carp methods unlearn`)."
    )
    model: str = Input("model", "Upstream stage whose model unlearns.")
    forget: str = Input(
        "dataset", "Upstream dataset stage whose data.jsonl is forgotten."
    )
    mask: Literal["keep", "infer", "none"] = Field(
        "keep",
        description="`keep`: zeros named by masks.safetensors stay zero; "
        "`infer`: every exact zero of a 2-D weight stays zero; `none`: dense.",
    )
    epochs: float = Field(
        5.0, gt=0, description="Passes over the forget set (ignored when `steps`)."
    )
    lr: float = Field(1e-4, gt=0, description="Peak learning rate (AdamW).")
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="Learning-rate decay after warmup."
    )
    warmup: float = Field(
        0.0, ge=0, lt=1, description="Fraction of the steps spent warming up."
    )
    micro_batch: int = Field(8, ge=1, description="Forget examples per forward pass.")

    template: str | None = Field(None, description=TEMPLATE_DESCRIPTION)
    train_on_inputs: bool = Field(False, description=TRAIN_ON_INPUTS_DESCRIPTION)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return check_template(v)


def retries(params: Params) -> int:
    """Prefect retries: a DeepSpeed launch resumes from its checkpoint."""
    return 1 if params.launcher == "deepspeed" else 0


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Unlearn ``inputs['forget']`` from ``inputs['model']``; write an HF
    checkpoint (+ masks.safetensors for sparse inputs), loss curves, metrics."""
    from stages.common.train.launch import run_training

    metrics, history, plots, reports = run_training(
        BUILDER, "unlearn", params, inputs, out_dir, ctx, examples_input="forget"
    )
    for key in ("forget_nll", "retain_nll"):
        if history and key in history[0]:
            metrics[f"first_{key}"] = float(history[0][key])
            metrics[f"final_{key}"] = float(history[-1][key])
    summary = f"unlearn/{params.method}: {metrics['steps']:.0f} steps, " + ", ".join(
        f"{k} {metrics[f'first_{k}']:.3f} -> {metrics[f'final_{k}']:.3f}"
        for k in ("forget_nll", "retain_nll")
        if f"first_{k}" in metrics
    )
    return StageResult(metrics=metrics, plots=plots, reports=reports, summary=summary)


METHODS = Registry(
    "unlearn method",
    {
        "ga": "stages.unlearn.ga",
        "grad_diff": "stages.unlearn.grad_diff",
        "npo": "stages.unlearn.npo",
        "simnpo": "stages.unlearn.simnpo",
        "rmu": "stages.unlearn.rmu",
    },
    base=Params,
    entry="make_loss",
)
KIND = Kind(
    name="unlearn",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model"}),
    default_method=DEFAULT_METHOD,
    resumable=True,
    plot_props={"x": "step", "y": "loss"},  # loss.csv (write_curve)
    retries=retries,
)
