"""Writes a partial file, then raises (atomicity tests)."""

from typing import Literal

from pipelines.contract import Input, Registry, StageParams

PROVIDES = frozenset({"dataset"})
METHODS = Registry("toyfail", {"boom": "_toy.fail"})
DEFAULT_METHOD = "boom"


class Params(StageParams):
    method: Literal["boom"] = "boom"
    data: str | None = Input("dataset", "Anything.", default=None)


def run(params, inputs, out_dir, ctx):
    (out_dir / "half.jsonl").write_text('{"id": "x"')
    raise RuntimeError("toy failure after a partial write")
