"""The ``dataset`` stage kind: expose records as a dataset artifact
(``data.jsonl`` + ``dataset.json``) that any stage with a dataset input reads.

Method ``world`` (the default) takes one of a world's record files, e.g. the
fictitious people's ``forget.jsonl`` / ``retain.jsonl`` that ``unlearn`` reads,
optionally a subset of its people (forget-set size sweeps) or one part of
several (sequential unlearning requests). Any other JSONL of the same record
shape is already a dataset when it sits in a stage output as ``data.jsonl``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field

from pipelines.contract import Kind, Registry, RunContext, StageParams, StageResult

DEFAULT_METHOD = "world"


class Params(StageParams):
    """Fields every dataset method accepts."""

    method: str = Field(DEFAULT_METHOD, description="Where the records come from.")


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Write the records ``params.method`` picks as a dataset artifact."""
    return KIND.method(params.method).expose(params, inputs, Path(out_dir), ctx)


METHODS = Registry(
    "dataset method",
    {
        "world": "stages.dataset.world",
        "files": "stages.dataset.files",
        "hub": "stages.dataset.hub",
    },
    base=Params,
    entry="expose",
)
KIND = Kind(
    name="dataset",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"dataset"}),
    default_method=DEFAULT_METHOD,
    plots=False,
)
