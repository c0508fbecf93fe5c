"""merge: combine two or more models of one architecture into one checkpoint
(linear, SLERP, task arithmetic, TIES, DARE, PCB), with mergekit's parameter
names, defaults and results where mergekit has the method.

Inputs are named by stage: ``models`` (a swept stage contributes every variant)
and, for the task-vector methods, ``base``. Per-model values (``weight``,
``density``) are a scalar or a mapping keyed by input stage name (or by a
variant, ``recover@add``), checked against ``models`` at validation. Tensors are
read one at a time from memory-mapped safetensors and the output is written one
at a time; pruning masks are kept by the ``mask`` policy. See docs/merge.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from pipelines.contract import (
    Input,
    Kind,
    Registry,
    RunContext,
    StageParams,
    StageResult,
)

PerModel = float | dict[str, float]


def per_model_keys(field: str, value: PerModel, models: list[str]) -> None:
    """A mapping ``value`` names only stages of ``models`` (or their variants,
    ``stage@label``) and gives every one of them a value; raises ValueError."""
    if not isinstance(value, dict):
        return
    import difflib

    for key in value:
        stage = key.split("@", 1)[0]
        if key not in models and stage not in models:
            close = difflib.get_close_matches(stage, models, n=1)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ValueError(
                f"{field}: '{key}' is not one of models ({', '.join(models)}){hint}"
            )
    for m in models:
        if m not in value and not any(k.startswith(f"{m}@") for k in value):
            raise ValueError(
                f"{field}: no value for model '{m}'; give every stage in `models` "
                "a value, or one scalar for all"
            )


def check_density(value: PerModel, models: list[str]) -> None:
    """Per-model densities name ``models`` and lie in (0, 1]; raises ValueError."""
    per_model_keys("density", value, models)
    values = value if isinstance(value, dict) else {"": value}
    for key, d in values.items():
        if not 0 < d <= 1:
            who = f" for model '{key}'" if key else ""
            raise ValueError(f"density: must be in (0, 1] (got {d}{who})")


class Resparsify(BaseModel):
    """Magnitude re-pruning of the merged weights (the decoder's linear layers)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["magnitude"] = Field(
        "magnitude", description="Prune method (magnitude: no calibration data)."
    )
    sparsity: float = Field(0.5, gt=0, lt=1, description="Fraction set to zero.")
    pattern: str = Field(
        "unstructured", description="'unstructured' or N:M like '2:4'."
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        from stages.prune.pattern import parse_pattern

        parse_pattern(v)
        return v


class Params(StageParams):
    """Fields every merge method accepts."""

    method: str = Field(..., description="Merge method (`carp methods merge`).")
    models: list[str] = Input(
        "model",
        "Upstream stages whose models are merged (two or more models in all; a "
        "swept stage contributes each of its variants).",
        min_length=1,
    )
    mask: Literal["base", "intersection", "union", "none"] = Field(
        "base",
        description="Which zeros of sparse inputs the merge keeps: `base` (the "
        "base model's mask, or the first model's without a base), `intersection` "
        "(kept where every input keeps it), `union` (kept where any input keeps "
        "it), `none` (dense result). N:M inputs stay N:M.",
    )
    resparsify: Resparsify | None = Field(
        None,
        description="Magnitude re-pruning after the merge, e.g. "
        "{sparsity: 0.5, pattern: '2:4'} for inputs whose masks differ.",
    )
    dtype: Literal["float32", "bfloat16", "float16"] | None = Field(
        None,
        description="dtype of the merged checkpoint (compute is float32); "
        "default: the dtype of the model whose config is kept.",
    )

    @field_validator("models")
    @classmethod
    def _unique(cls, v: list[str]) -> list[str]:
        dup = sorted({m for m in v if v.count(m) > 1})
        if dup:
            raise ValueError(f"listed more than once: {', '.join(dup)}")
        return v


class WeightedParams(Params):
    """Methods with a per-model ``weight`` (mergekit's tensor parameter)."""

    weight: PerModel = Field(
        1.0,
        description="mergekit `weight`: one number for every model, or a mapping "
        "input stage -> weight.",
    )

    @model_validator(mode="after")
    def _weight_keys(self) -> WeightedParams:
        per_model_keys("weight", self.weight, self.models)
        return self


class TaskVectorParams(WeightedParams):
    """Methods that merge task vectors (model - base)."""

    model_config = ConfigDict(populate_by_name=True)

    base: str = Input(
        "model",
        "Upstream stage whose model the task vectors are taken against "
        "(mergekit's base_model).",
    )
    lambda_: float = Field(
        1.0,
        alias="lambda",
        description="mergekit `lambda`: scale of the merged task vector.",
    )

    @model_validator(mode="after")
    def _base_not_merged(self) -> TaskVectorParams:
        if self.base in self.models:
            raise ValueError(
                f"base: '{self.base}' is also listed in models; the base is what "
                "task vectors are taken against, remove it from models"
            )
        return self


class SparsifiedParams(TaskVectorParams):
    """Task-vector methods that drop part of each task vector (``density``)."""

    density: PerModel = Field(
        1.0,
        description="mergekit `density`: fraction of each task vector kept, in "
        "(0, 1]; one number or a mapping input stage -> density.",
    )
    rescale: bool = Field(
        False,
        description="mergekit `rescale`: rescale what is kept to the task "
        "vector's L1 norm (in expectation 1/density for DARE's random drop).",
    )

    @model_validator(mode="after")
    def _density(self) -> SparsifiedParams:
        check_density(self.density, self.models)
        return self


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Check the inputs, then merge them tensor by tensor into ``out_dir``."""
    from stages.merge.stage import execute

    return execute(params, inputs, Path(out_dir), ctx)


METHODS = Registry(
    "merge method",
    {
        "linear": "stages.merge.linear",
        "slerp": "stages.merge.slerp",
        "task_arithmetic": "stages.merge.task_arithmetic",
        "ties": "stages.merge.ties",
        "dare_linear": "stages.merge.dare_linear",
        "dare_ties": "stages.merge.dare_ties",
        "pcb": "stages.merge.pcb",
    },
    base=Params,
    entry="merge_tensor",
)


def check_inputs(params: Any, inputs: Any) -> list[tuple[str, str]]:
    """A merge needs two or more models once sweeps have expanded (one model
    merged with itself is that model: nothing to merge), slerp exactly two."""
    models = list(inputs.get("models") or [])
    if len(models) < 2:
        named = ", ".join(models) or "none"
        return [
            (
                "models",
                f"a merge needs two or more models, got {len(models)} ({named}); "
                "list another model stage, or a swept stage (all its variants)",
            )
        ]
    if params.method == "slerp" and len(models) != 2:
        return [
            (
                "models",
                f"slerp merges exactly two models, got {len(models)} "
                f"({', '.join(models)})",
            )
        ]
    return []


KIND = Kind(
    name="merge",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model"}),
    default_method=None,
    plots=False,
    check_inputs=check_inputs,
)
