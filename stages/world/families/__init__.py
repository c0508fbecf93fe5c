"""Registry of the world's task families: name -> module exposing ``FAMILY``.

``reverse`` and ``sort`` are open (sampled problems, eval on unseen problems);
``add``, ``sub``, ``maximum``, ``count``, ``next_letter``, ``facts`` and
``translate`` are closed tables (eval on held-out phrasings of known problems).
"""

from __future__ import annotations

import difflib
import importlib

from stages.world.families.base import Family, FamilyConfig, Problem, Template

FAMILIES: dict[str, str] = {
    name: f"stages.world.families.{name}"
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
}


def unknown_family_message(name: str) -> str:
    close = difflib.get_close_matches(name, sorted(FAMILIES), n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown family '{name}': {hint}known families: {', '.join(FAMILIES)}"


def load_family(name: str) -> type[Family]:
    """The ``Family`` subclass registered as ``name``."""
    if name not in FAMILIES:
        raise KeyError(unknown_family_message(name))
    return importlib.import_module(FAMILIES[name]).FAMILY


def describe_family(name: str) -> str:
    doc = (importlib.import_module(FAMILIES[name]).__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""


__all__ = ["FAMILIES", "Family", "FamilyConfig", "Problem", "Template", "load_family"]
