"""Writes a partial file, then raises (atomicity tests)."""

from typing import Literal

from pipelines.contract import Input, Kind, Registry, StageParams


class Params(StageParams):
    method: Literal["boom"] = "boom"
    data: str | None = Input("dataset", "Anything.", default=None)


def run(params, inputs, out_dir, ctx):
    (out_dir / "half.jsonl").write_text('{"id": "x"')
    raise RuntimeError("toy failure after a partial write")


METHODS = Registry("toyfail method", {"boom": "_toy.fail"}, base=Params, entry="run")
KIND = Kind(
    name="toyfail",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"dataset"}),
    default_method="boom",
)
