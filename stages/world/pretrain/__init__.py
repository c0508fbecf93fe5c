"""The ``pretrain`` stage kind: train the tiny base model on a world.

One method, ``llama`` (the default): a LlamaForCausalLM built from a
LlamaConfig, trained from scratch with AdamW + cosine schedule on the world's
``pretrain.jsonl``, then scored on the world's eval sets (``em/<family>``,
``em/mean``) and ``ppl.txt`` (``ppl``). ``exclude`` leaves the forget (or
holdout) people's facts out of training: the retrained oracle that unlearning
is measured against. Defaults are tuned so the default world
reaches >= 90% mean exact match in a few CPU minutes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import (
    Input,
    Kind,
    Registry,
    RunContext,
    StageParams,
    StageResult,
)

DEFAULT_METHOD = "llama"


class Params(StageParams):
    """Model shape and optimisation; every field feeds LlamaConfig or the loop."""

    method: str = Field(DEFAULT_METHOD, description="Model family trained.")
    data: str = Input("world", "Upstream world stage (pretrain.jsonl, tokenizer/).")
    hidden_size: int = Field(96, ge=8, le=8192, description="Model width.")
    layers: int = Field(4, ge=1, le=128, description="Decoder layers.")
    heads: int = Field(4, ge=1, le=128, description="Attention heads.")
    kv_heads: int = Field(2, ge=1, le=128, description="Key/value heads (GQA).")
    intermediate_size: int = Field(256, ge=8, le=32768, description="MLP width.")
    steps: int = Field(2400, ge=1, le=10_000_000, description="Optimizer steps.")
    batch_size: int = Field(64, ge=1, le=8192, description="Records per step.")
    lr: float = Field(3e-3, gt=0, le=1, description="Peak AdamW learning rate.")
    warmup_ratio: float = Field(
        0.05, ge=0, lt=1, description="Linear warm-up, as a fraction of steps."
    )
    min_lr_ratio: float = Field(
        0.1, ge=0, le=1, description="Final lr as a fraction of the peak (cosine)."
    )
    weight_decay: float = Field(0.01, ge=0, le=1, description="AdamW decay.")
    max_len: int = Field(
        64, ge=8, le=8192, description="Tokens per record (truncated)."
    )
    loss_on: Literal["sequence", "response"] = Field(
        "sequence",
        description="Train on every token (a language model of the world's text, so "
        "perplexity and calibration are meaningful) or on response tokens only.",
    )
    exclude: tuple[Literal["forget", "holdout"], ...] = Field(
        (),
        description="People of the world's forget.jsonl / holdout.jsonl whose "
        "facts are left out of training: `[forget]` trains the retrained oracle "
        "of unlearning, a model that never saw the forget set.",
    )
    log_every: int = Field(50, ge=1, description="Steps between logged losses.")
    eval_batch_size: int = Field(64, ge=1, description="Batch size of the final eval.")

    @model_validator(mode="after")
    def _shape(self) -> Params:
        if self.hidden_size % self.heads:
            raise ValueError(
                f"heads: hidden_size {self.hidden_size} must be divisible by heads "
                f"{self.heads}; pick heads among its divisors"
            )
        if self.heads % self.kv_heads:
            raise ValueError(
                f"kv_heads: heads {self.heads} must be a multiple of kv_heads "
                f"{self.kv_heads}; pick a divisor of heads"
            )
        return self


def run(
    params: Params, inputs: dict[str, Path], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Train, evaluate and save the base model into ``out_dir``."""
    return KIND.method(params.method).train(params, Path(inputs["data"]), out_dir, ctx)


def describe(params: Params) -> dict[str, Any]:
    """Model shape as LlamaConfig keyword arguments."""
    return {
        "hidden_size": params.hidden_size,
        "num_hidden_layers": params.layers,
        "num_attention_heads": params.heads,
        "num_key_value_heads": params.kv_heads,
        "intermediate_size": params.intermediate_size,
    }


METHODS = Registry(
    "pretrain method",
    {"llama": "stages.world.pretrain.llama"},
    base=Params,
    entry="train",
)
KIND = Kind(
    name="pretrain",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"model"}),
    default_method=DEFAULT_METHOD,
)
