"""Params shared by the selection methods that run language models
(paser, perplexity, ifd): the pruned model input, encoding length, batching,
device and dtype."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from pipelines.contract import Input
from stages.select import BudgetParams


class LMParams(BudgetParams):
    model: str = Input("model", "Upstream stage holding the pruned model.")
    max_len: int = Field(
        256, ge=8, description="Token cutoff of the shared template encoding."
    )
    max_batch_tokens: int = Field(
        8192,
        ge=64,
        description="Padded tokens per scoring batch (B·T); batches are "
        "length-bucketed so little of it is padding.",
    )
    max_batch: int = Field(64, ge=1, description="Most records per scoring batch.")
    device: str = Field(
        "auto", description="Torch device for scoring; `auto`: cuda if available."
    )
    dtype: Literal["float32", "bfloat16", "float16"] = Field(
        "float32",
        description="Model weights dtype for scoring (divergences and losses "
        "are always computed in float32).",
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
