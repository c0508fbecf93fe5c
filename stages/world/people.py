"""The fictitious people of a world's record files, and dropping every record
that names them: the pretrain kind's ``exclude`` (the retrained oracle) and the
dataset kind's ``exclude`` (a recovery pool without the forget people's facts)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from stages.common.io import read_jsonl


def excluded_people(world_dir: Path, exclude: tuple[str, ...]) -> set[str]:
    """Subjects of the world's ``<name>.jsonl`` for each name in ``exclude``."""
    people: set[str] = set()
    for name in exclude:
        f = world_dir / f"{name}.jsonl"
        if not f.exists():
            raise FileNotFoundError(
                f"exclude: {world_dir.name} has no {f.name}"
                + (
                    " (set the world's holdout_fraction > 0)"
                    if name == "holdout"
                    else ""
                )
            )
        people |= {str(r["subject"]) for r in read_jsonl(f) if r.get("subject")}
    return people


def drop_people(
    records: list[dict[str, Any]], people: set[str]
) -> list[dict[str, Any]]:
    """Records that name none of ``people`` (whole-word match in the prompt)."""
    if not people:
        return records
    alt = "|".join(re.escape(p) for p in sorted(people, key=len, reverse=True))
    pat = re.compile(rf"(?<!\w)(?:{alt})(?!\w)")
    return [
        r
        for r in records
        if not pat.search(f"{r.get('instruction', '')} {r.get('input', '')}")
    ]
