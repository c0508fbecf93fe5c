"""lm-evaluation-harness tasks as an evaluate method of their own: named tasks
(standard ones where the machine has them, or local task YAMLs from
``lm_eval_include``), few-shot and limit, on every model of ``models`` with
carp's loaded model and tokenizer; no world and no dataset stage needed. The
``datasets`` method (stages.evaluate.datasets) runs the same tasks beside its
own perplexity, generation and multiple-choice scores."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from stages.evaluate.datasets import Params as DatasetsParams
from stages.evaluate.datasets import evaluate

__all__ = ["Params", "evaluate"]


class Params(DatasetsParams):
    method: Literal["lm_eval"] = "lm_eval"  # type: ignore[assignment]
    lm_eval_tasks: tuple[str, ...] = Field(
        ...,
        min_length=1,
        description="lm-evaluation-harness task names (optional extra lm-eval).",
    )
