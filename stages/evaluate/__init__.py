"""The ``evaluate`` stage kind: score models and tabulate the results.

Methods (``carp methods evaluate``): ``world`` (the default) scores every model
on a world's held-out sets with carp's suites. Suites (``SUITES``) are
registered like methods: ``perplexity`` (rolling log-likelihood, lm-eval
``loglikelihood_rolling``; word perplexity, bits per byte), ``exact_match``
(greedy answers per family), ``multiple_choice`` (acc / acc_norm from option
log-likelihoods, lm-eval style), ``lm_eval`` (lm-evaluation-harness tasks,
optional extra) and ``unlearning`` (MUSE: VerbMem, KnowMem, Min-K% / Min-K%++
PrivLeak); a method's ``suites`` param picks which run.
Per-model results are cached in the stage's checkpoint folder, so an
interrupted evaluation resumes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from pipelines.contract import (
    Input,
    Kind,
    Registry,
    RunContext,
    StageParams,
    StageResult,
)
from stages.common.device import DEVICE_DESCRIPTION, DTYPE_DESCRIPTION, check_device
from stages.common.templates import TEMPLATE_DESCRIPTION, check_template

DEFAULT_METHOD = "world"
SUITES = Registry(
    "suite",
    {
        "perplexity": "stages.evaluate.perplexity",
        "exact_match": "stages.evaluate.exact_match",
        "multiple_choice": "stages.evaluate.multiple_choice",
        "lm_eval": "stages.evaluate.lm_eval",
        "unlearning": "stages.evaluate.unlearning",
    },
    entry="score",
)


class Params(StageParams):
    """Which models are scored; fields every evaluation method shares."""

    method: str = Field(
        DEFAULT_METHOD, description="Evaluation method (`carp methods evaluate`)."
    )
    models: list[str] = Input(
        "model", "Upstream stages whose models are scored (table columns, in order)."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Prompts/windows per batch.")

    template: str | None = Field(None, description=TEMPLATE_DESCRIPTION)
    device: str = Field("auto", description=DEVICE_DESCRIPTION)
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description=DTYPE_DESCRIPTION
    )

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        return check_device(v)

    def local_issues(self, base: Path) -> list[tuple[str, str]]:
        """A CUDA device this machine lacks, refused before anything runs."""
        from stages.common.device import device_issues

        return device_issues(self.device)

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("models: list at least one upstream model stage")
        return v

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return check_template(v)


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Score every model of ``inputs['models']`` with ``params.method``."""
    return KIND.method(params.method).evaluate(params, inputs, Path(out_dir), ctx)


def suite_modules(params: Any) -> list[str]:
    """The suite modules a node runs (part of its code identity)."""
    return [SUITES.target(s) for s in getattr(params, "suites", ())]


METHODS = Registry(
    "evaluate method",
    {
        "world": "stages.evaluate.world",
        "datasets": "stages.evaluate.datasets",
        "lm_eval": "stages.evaluate.harness",
    },
    base=Params,
    entry="evaluate",
)
KIND = Kind(
    name="evaluate",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"metrics"}),
    default_method=DEFAULT_METHOD,
    resumable=True,  # per-model results are cached in ctx.checkpoint_dir
    # results.csv: one bar per (family, model) row; em.png is shown as an image
    plot_props={"x": "em", "y": "row", "template": "bar_horizontal"},
    code=suite_modules,
    catalogs=(SUITES,),
)
