"""Writes ``n`` numbered records (toy source)."""

from typing import Literal

from pydantic import Field

from pipelines.contract import Kind, Registry, StageParams, StageResult


class Params(StageParams):
    method: Literal["count"] = "count"
    n: int = Field(3, ge=1, description="How many records.")
    sleep: float = Field(0.0, ge=0, description="Seconds to wait (flow tests).")
    rendezvous: str | None = Field(
        None,
        description="A folder: announce this node there, then wait (at most 60 s) "
        "until two nodes have, so concurrent nodes provably overlap.",
    )


def run(params, inputs, out_dir, ctx):
    import json
    import time

    from stages.common.io import write_dataset

    start = time.time()
    if params.rendezvous:
        from pathlib import Path

        folder = Path(params.rendezvous)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"n{params.n}").touch()
        while len(list(folder.iterdir())) < 2 and time.time() - start < 60:
            time.sleep(0.05)
    time.sleep(params.sleep)

    recs = [
        {"id": f"r{i}", "value": i * 10 + (params.seed or 0)} for i in range(params.n)
    ]
    write_dataset(recs, out_dir, source="toysrc")
    (out_dir / "times.json").write_text(json.dumps([start, time.time()]))
    return StageResult(
        metrics={"count": params.n}, datasets=["data.jsonl"], reports=["times.json"]
    )


METHODS = Registry("toysrc method", {"count": "_toy.source"}, base=Params, entry="run")
KIND = Kind(
    name="toysrc",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"dataset"}),
    default_method="count",
)
