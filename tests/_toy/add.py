"""Adds ``offset`` to every record's value (toy transform)."""

import time
from typing import Literal

from pydantic import Field

from pipelines.contract import Input, Kind, Registry, StageParams, StageResult


class Params(StageParams):
    method: Literal["plus"] = "plus"
    data: str = Input("dataset", "Upstream dataset.")
    extra: list[str] = Input("dataset", "More datasets (list input).", default=[])
    offset: int = Field(1, description="Added to each value.")


def run(params, inputs, out_dir, ctx):
    from stages.common.io import read_dataset, write_dataset

    recs = read_dataset(inputs["data"])
    for r in recs:
        r["value"] += params.offset
    write_dataset(recs, out_dir, source=inputs["data"].name)
    plot = out_dir / "plots" / "values.csv"
    plot.parent.mkdir()
    plot.write_text(
        "i,value\n" + "".join(f"{i},{r['value']}\n" for i, r in enumerate(recs))
    )
    # a run report with a timing: must not make the output look changed
    (out_dir / "report.json").write_text(f'{{"seconds": {time.time()}}}')
    for step in range(3):
        ctx.log_metrics({"loss": 1.0 / (step + 1)}, step)
    return StageResult(
        metrics={"total": sum(r["value"] for r in recs)},
        plots=["plots/values.csv"],
        reports=["report.json"],
    )


METHODS = Registry("toyadd method", {"plus": "_toy.add"}, base=Params, entry="run")
KIND = Kind(
    name="toyadd",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"dataset"}),
    default_method="plus",
)
