"""Stage kind registry: kind name -> package (imported lazily).

Adding a kind is a new package under ``stages/`` plus one entry here.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

KINDS: dict[str, str] = {
    "world": "stages.world",
    "pretrain": "stages.world.pretrain",
    "pretrained": "stages.pretrained",
    "prune": "stages.prune",
    "select": "stages.select",
    "recover": "stages.recover",
    "evaluate": "stages.evaluate",
}


def suggest_kind(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(KINDS), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"{hint}known kinds: {', '.join(sorted(KINDS))}"


def load_kind(name: str) -> ModuleType:
    if name not in KINDS:
        raise KeyError(f"unknown kind '{name}': {suggest_kind(name)}")
    return importlib.import_module(KINDS[name])
