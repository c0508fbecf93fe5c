"""The ``prune`` stage kind: unstructured, N:M and structured pruning of a causal LM.

Methods (one module each, registered below): magnitude, wanda, sparsegpt (mask
pruning, unstructured or N:M) and width, depth (structured, a smaller dense
model with a rewritten config). Output: an HF checkpoint, ``masks.safetensors``
for mask pruning, and metrics with sparsity, parameter counts, time and memory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from pipelines.contract import (
    Input,
    Kind,
    Registry,
    RunContext,
    StageParams,
    StageResult,
)
from stages.prune.pattern import NM_CONVENTION

DEFAULT_METHOD = "magnitude"


class Params(StageParams):
    """Fields shared by every prune method; methods add their own."""

    method: str = Field(DEFAULT_METHOD, description="Pruning method (`carp methods`).")
    model: str = Input("model", "Upstream stage whose model is pruned.")
    sparsity: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="Fraction of the targeted weights set to zero (mask methods); "
        "fraction of heads/channels (width) or blocks (depth) removed.",
    )
    pattern: str = Field(
        "unstructured",
        description="'unstructured' or N:M like '2:4' (keep N of every M weights "
        "along the input dimension, NVIDIA's convention; the Wanda/SparseGPT "
        "reference code's prune_n counts pruned weights); N:M implies sparsity "
        "1 - N/M.",
    )
    include: list[str] = Field(
        default_factory=lambda: ["*"],
        description="fnmatch patterns of module names to prune (linear layers).",
    )
    exclude: list[str] = Field(
        default_factory=lambda: ["lm_head", "*embed_tokens*"],
        description="fnmatch patterns of module names never pruned.",
    )
    nsamples: int = Field(
        128, ge=1, description="Calibration samples (records, or windows)."
    )
    calib_format: Literal["records", "windows"] | None = Field(
        None,
        description="'records': each sample is one instruction/chat record rendered "
        "with `template` from BOS, as the model was trained; 'windows': "
        "`nsamples` windows of `seqlen` tokens, the C4 recipe of Wanda/SparseGPT "
        "(text documents: a random document longer than `seqlen`, a random "
        "window of it; records: rendered, concatenated and cut). Default: "
        "windows for a text dataset (dataset.json shape 'text'), else records.",
    )
    template: str | None = Field(
        None,
        description="Prompt template rendering instruction/chat calibration "
        "records (carp | alpaca | chat | a Jinja string); None: the pipeline's "
        "`template` (carp by default). Text documents are not rendered.",
    )
    seqlen: int | None = Field(
        None,
        ge=2,
        description="Tokens per window ('windows'; default min(2048, the model's "
        "context)) or at most per record ('records'; default the model's "
        "context: max_position_embeddings, or the tokenizer's model_max_length "
        "when smaller).",
    )
    batch_size: int = Field(
        8, ge=1, description="Calibration sequences per forward pass of a block."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32", description="dtype the model is loaded and saved in."
    )
    device: str = Field(
        "auto",
        description="Where each block is processed ('auto' = cuda when present, "
        "else cpu); the model itself stays in CPU memory.",
    )

    @field_validator("device")
    @classmethod
    def _device_spelling(cls, v: str) -> str:
        from stages.common.device import check_device

        return check_device(v)

    def local_issues(self, base: Any) -> list[tuple[str, str]]:
        """A CUDA device this machine lacks, refused before anything runs."""
        from stages.common.device import device_issues

        return device_issues(self.device)

    @field_validator("template")
    @classmethod
    def _check_template(cls, v: str | None) -> str | None:
        from stages.common.templates import check_template

        return check_template(v)

    @field_validator("pattern")
    @classmethod
    def _check_pattern(cls, v: str) -> str:
        from stages.prune.pattern import parse_pattern

        parse_pattern(v)
        return v

    @model_validator(mode="after")
    def _check_nm_sparsity(self) -> Params:
        from stages.prune.pattern import parse_pattern

        nm = parse_pattern(self.pattern)
        if nm and "sparsity" in self.model_fields_set:
            implied = 1 - nm[0] / nm[1]
            if abs(self.sparsity - implied) > 1e-9:
                raise ValueError(
                    f"sparsity: pattern {self.pattern} implies sparsity {implied:g}; "
                    f"drop `sparsity` or set it to {implied:g}"
                )
        return self

    @property
    def nm(self) -> tuple[int, int] | None:
        from stages.prune.pattern import parse_pattern

        return parse_pattern(self.pattern)

    @property
    def target_sparsity(self) -> float:
        nm = self.nm
        return 1 - nm[0] / nm[1] if nm else self.sparsity


class MaskParams(Params):
    """Base for the mask methods (magnitude, wanda, sparsegpt): how the target
    sparsity is spread over decoder blocks."""

    profile: Literal["uniform", "owl"] = Field(
        "uniform",
        description="'uniform': every block at `sparsity`; 'owl': per-block "
        "sparsity from its outlier ratio (Yin et al. 2024), the same global "
        "sparsity (reads calibration data, also for magnitude).",
    )
    owl_m: float = Field(
        5.0,
        gt=0,
        description="OWL: a score |W|*||X|| is an outlier above owl_m x its "
        "block's mean (the paper's M, 5).",
    )
    owl_lambda: float = Field(
        0.08,
        gt=0,
        description="OWL: block sparsities range over sparsity +- owl_lambda "
        "(the paper's lambda, 0.08).",
    )

    @model_validator(mode="after")
    def _check_profile(self) -> MaskParams:
        if self.profile != "owl":
            return self
        if self.nm:
            raise ValueError(
                f"profile: owl spreads unstructured sparsity over blocks; pattern "
                f"{self.pattern} fixes it per group, so use profile 'uniform'"
            )
        s = self.target_sparsity
        if not self.owl_lambda < min(s, 1 - s):
            raise ValueError(
                f"owl_lambda: {self.owl_lambda:g} would push a block's sparsity "
                f"outside (0, 1) around {s:g}; use owl_lambda < {min(s, 1 - s):g}"
            )
        return self


class CalibratedParams(Params):
    """Base for methods that read calibration data (wanda, sparsegpt, depth)."""

    calib: str = Input(
        "dataset",
        "Dataset stage whose records calibrate the method (usually the world "
        "stage, whose pool is a dataset).",
    )


class StructuredParams(Params):
    """Base for methods that remove whole structures (no N:M pattern)."""

    @model_validator(mode="after")
    def _no_nm(self) -> StructuredParams:
        if self.pattern != "unstructured":
            raise ValueError(
                f"pattern: {self.method} removes whole structures; N:M applies to "
                "magnitude/wanda/sparsegpt only, so leave pattern 'unstructured'"
            )
        return self


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Prune ``inputs['model']`` with ``params.method`` and write the result."""
    from stages.prune.stage import execute

    return execute(params, inputs, Path(out_dir), ctx)


METHODS = Registry(
    "prune method",
    {
        "magnitude": "stages.prune.magnitude",
        "wanda": "stages.prune.wanda",
        "sparsegpt": "stages.prune.sparsegpt",
        "width": "stages.prune.width",
        "depth": "stages.prune.depth",
    },
    base=Params,
    entry="apply",
)
KIND = Kind(
    name="prune",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model"}),
    default_method=DEFAULT_METHOD,
    notes=(
        f"pattern: {NM_CONVENTION}.",
        "scope (magnitude, wanda): the comparison group, 'row' (each output row) "
        "or 'layer' (each matrix); defaults follow each paper: magnitude 'layer' "
        "(Han et al. 2015, Zhu & Gupta 2017), wanda 'row' (Sun et al. 2023); "
        "compare the two at equal scope.",
    ),
)
