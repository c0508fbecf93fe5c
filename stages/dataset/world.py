"""A world's record file as a dataset: ``forget``, ``retain`` or ``holdout``
(the fictitious people's facts, every phrasing) or ``pool``.

``people`` keeps a seeded subset of the file's people (a fraction or a count;
forget-set size sweeps, MUSE scalability); ``part``/``parts`` keeps the
``part``-th of ``parts`` disjoint groups of people (MUSE sustainability:
sequential requests). ``exclude`` drops every record naming a person of
the world's forget / holdout files (the pretrain kind's exclusion): with
``split: pool`` it gives a recovery pool without the forget people's facts.
Records keep their ids.
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input, RunContext, StageResult
from stages.dataset import Params as KindParams

FILES = {
    "forget": "forget.jsonl",
    "retain": "retain.jsonl",
    "holdout": "holdout.jsonl",
    "pool": "data.jsonl",
}


class Params(KindParams):
    method: Literal["world"] = "world"
    world: str = Input("world", "Upstream world stage whose file is exposed.")
    split: Literal["forget", "retain", "holdout", "pool"] = Field(
        ..., description="Which of the world's record files."
    )
    people: float | int | None = Field(
        None,
        gt=0,
        description="Keep a seeded subset of the people: a fraction in (0, 1] or "
        "a count >= 1 (records without `subject` count as their own person).",
    )
    exclude: tuple[Literal["forget", "holdout"], ...] = Field(
        (),
        description="Drop every record that names a person of the world's "
        "forget.jsonl / holdout.jsonl (as pretrain's `exclude`): `split: pool` "
        "with `[forget, holdout]` is a recovery pool that cannot teach the "
        "forgotten facts back nor make the holdout people members.",
    )
    parts: int = Field(1, ge=1, description="Split the people into this many groups.")
    part: int = Field(0, ge=0, description="Which group to keep (0-based).")

    @model_validator(mode="after")
    def _part(self) -> Params:
        if self.part >= self.parts:
            raise ValueError(
                f"part: {self.part} must be below parts ({self.parts}); parts are "
                "0-based"
            )
        if set(self.exclude) & {self.split}:
            raise ValueError(
                f"exclude: {self.split} would drop every record of split "
                f"{self.split}; exclude the other files only"
            )
        if isinstance(self.people, float) and self.people > 1:
            raise ValueError("people: a fraction must be <= 1; give a count as int")
        return self


def sizes(params: Params, upstream: Any) -> dict[str, int]:
    """At most the world's pool for ``split: pool`` (people filters only drop
    records); the other files' sizes are known once the world is built."""
    pool = upstream.get("world", {}).get("records")
    return {"records": pool} if params.split == "pool" and pool is not None else {}


def choose_people(
    subjects: list[str], people: float | int | None, parts: int, part: int, seed: int
) -> set[str]:
    """Seeded subset, then the ``part``-th of ``parts`` near-equal groups."""
    order = sorted(set(subjects))
    random.Random(f"{seed}:dataset-people").shuffle(order)
    if people is not None:
        n = round(people * len(order)) if isinstance(people, float) else int(people)
        if n < 1 or n > len(order):
            raise ValueError(
                f"people: {people} selects {n} of {len(order)} people; "
                f"give 1..{len(order)}"
            )
        order = order[:n]
    return set(order[part::parts])


def expose(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Copy the chosen records into ``data.jsonl`` + ``dataset.json``."""
    from stages.common.io import read_jsonl, write_dataset
    from stages.world.people import drop_people, excluded_people

    world = Path(inputs["world"])
    f = world / FILES[params.split]
    if not f.exists():
        hint = (
            " (set the world's holdout_fraction > 0)"
            if params.split == "holdout"
            else ""
        )
        raise FileNotFoundError(f"split: {world.name} has no {f.name}{hint}")
    records = list(read_jsonl(f))
    n_read = len(records)
    records = drop_people(records, excluded_people(world, params.exclude))
    subjects = [str(r.get("subject", r["id"])) for r in records]
    keep = choose_people(subjects, params.people, params.parts, params.part, ctx.seed)
    chosen = [r for r, s in zip(records, subjects, strict=True) if s in keep]
    if not chosen:
        raise ValueError(f"split: no record of {f.name} is left; widen people/parts")
    info = write_dataset(
        chosen,
        out_dir,
        source=f"{world.name}/{f.name}",
        people=len(keep),
        part=params.part,
        parts=params.parts,
        excluded=list(params.exclude),
    )
    metrics = {"count": float(info["count"]), "people": float(len(keep))}
    if params.exclude:
        metrics["excluded_records"] = float(n_read - len(records))
    return StageResult(
        metrics=metrics,
        datasets=["data.jsonl"],
        summary=f"dataset: {info['count']} records of {len(keep)} people from "
        f"{world.name}/{f.name}",
    )
