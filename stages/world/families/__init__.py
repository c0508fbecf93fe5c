"""Registry of the world's task families: name -> module exposing ``FAMILY``.

``reverse`` and ``sort`` are open (sampled problems, eval on unseen problems);
``add``, ``sub``, ``maximum``, ``count``, ``next_letter``, ``facts`` and
``translate`` are closed tables (eval on held-out phrasings of known problems).
"""

from __future__ import annotations

import importlib

from pipelines.contract import Registry
from stages.world.families.base import Family, FamilyConfig, Problem, Template

FAMILIES = Registry(
    "family",
    plural="families",
    entries={
        name: f"stages.world.families.{name}:FAMILY"
        for name in (
            "add",
            "sub",
            "reverse",
            "sort",
            "count",
            "maximum",
            "next_letter",
            "facts",
            "translate",
        )
    },
)


def load_family(name: str) -> type[Family]:
    """The ``Family`` subclass registered as ``name``."""
    return FAMILIES.load(name)


def describe_family(name: str) -> str:
    """First line of the family module's docstring."""
    doc = (importlib.import_module(FAMILIES.target(name)).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


__all__ = ["FAMILIES", "Family", "FamilyConfig", "Problem", "Template", "load_family"]
