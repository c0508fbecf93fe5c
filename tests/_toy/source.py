"""Writes ``n`` numbered records (toy source)."""

from typing import Literal

from pydantic import Field

from pipelines.contract import Registry, StageParams, StageResult

PROVIDES = frozenset({"dataset"})
METHODS = Registry("toysrc", {"count": "_toy.source"})
DEFAULT_METHOD = "count"


class Params(StageParams):
    method: Literal["count"] = "count"
    n: int = Field(3, ge=1, description="How many records.")


def run(params, inputs, out_dir, ctx):
    from stages.common.io import write_dataset

    recs = [
        {"id": f"r{i}", "value": i * 10 + (params.seed or 0)} for i in range(params.n)
    ]
    write_dataset(recs, out_dir, source="toysrc")
    return StageResult(
        metrics={"count": params.n}, datasets=["data.jsonl"], artifact="dataset"
    )
