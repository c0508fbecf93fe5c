"""Reads an adapter input (contract tests of params-dependent outputs)."""

from typing import Literal

from pipelines.contract import Input, Kind, Registry, StageParams, StageResult


class Params(StageParams):
    method: Literal["use"] = "use"
    adapter: str = Input("adapter", "Upstream stage that saved an adapter.")


def run(params, inputs, out_dir, ctx):
    return StageResult()


METHODS = Registry("toyadapt method", {"use": "_toy.adapter"}, base=Params, entry="run")
KIND = Kind(
    name="toyadapt",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"metrics"}),
    default_method="use",
)
