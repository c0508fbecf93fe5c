"""Shared machinery of the world's task families: templates, problems, records.

A family is a procedurally defined capability (addition, reversal, fact lookup,
...) phrased through several instruction templates. *Open* families sample
problems from a space too large to enumerate; splits are disjoint on the
problem, so eval asks problems never seen in training. *Closed* families own a
finite table (fictitious facts, a lexicon); splits are disjoint on (problem,
phrasing), so eval asks known problems in held-out phrasings.
"""

from __future__ import annotations

import random
import string
from dataclasses import dataclass, field
from typing import Any, ClassVar

LETTERS = string.ascii_lowercase


@dataclass(frozen=True)
class Template:
    """One phrasing: ``instruction`` and ``input`` are ``str.format`` patterns."""

    instruction: str
    input: str = ""
    variant: str = ""  # which kind of problem it phrases ("" = all)


@dataclass(frozen=True)
class Problem:
    """One question with its answer; ``key`` identifies it for split disjointness."""

    key: tuple[Any, ...]
    fields: dict[str, str]
    answer: str
    variant: str = ""
    subject: str | None = None


@dataclass(frozen=True)
class FamilyConfig:
    """World-level settings a family may read."""

    facts: int = 48
    scale: int = 1  # table_scale: widens tables and problem spaces (1: defaults)


@dataclass
class Family:
    """Base class: subclasses set ``name``, ``templates`` and ``sample`` or
    ``problems`` (closed) and may override ``wrong_answer``."""

    rng: random.Random
    cfg: FamilyConfig = field(default_factory=FamilyConfig)

    name: ClassVar[str] = ""
    closed: ClassVar[bool] = False
    templates: ClassVar[tuple[Template, ...]] = ()

    def __post_init__(self) -> None:
        self.setup()

    def setup(self) -> None:
        """Build the family's fixed content (fact tables, lexicons) from ``rng``."""

    def sample(self, rng: random.Random) -> Problem:
        raise NotImplementedError(f"open family '{self.name}' must define sample()")

    def problems(self) -> list[Problem]:
        raise NotImplementedError(f"closed family '{self.name}' must list problems()")

    def phrasings(self, problem: Problem) -> list[int]:
        """Indices of the templates that can phrase ``problem``."""
        return [
            i
            for i, t in enumerate(self.templates)
            if t.variant in ("", problem.variant)
        ]

    def render(self, problem: Problem, template: int) -> dict[str, str]:
        t = self.templates[template]
        return {
            "family": self.name,
            "instruction": t.instruction.format(**problem.fields),
            "input": t.input.format(**problem.fields),
            "output": problem.answer,
        }

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        """A plausible but wrong answer (for the pool's ``noise``)."""
        answers = sorted({p.answer for p in self.problems()} - {problem.answer})
        return rng.choice(answers)


def spaced(chars: str | list[str]) -> str:
    """``"abc"`` -> ``"a b c"``: one token per letter keeps string tasks learnable."""
    return " ".join(chars)


def random_letters(
    rng: random.Random, lo: int, hi: int, alphabet: str = LETTERS
) -> str:
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(lo, hi)))


def wrong_number(rng: random.Random, answer: int) -> str:
    """A nearby wrong integer (off by 1..10, never negative, never ``answer``)."""
    while True:
        cand = answer + rng.choice([-1, 1]) * rng.randint(1, 10)
        if cand >= 0 and cand != answer:
            return str(cand)


def shuffled_wrong(rng: random.Random, answer: str) -> str:
    """A permutation of a spaced answer that differs from it (or a changed letter)."""
    items = answer.split(" ")
    if len(set(items)) > 1:
        while True:
            perm = items[:]
            rng.shuffle(perm)
            if perm != items:
                return " ".join(perm)
    items[0] = (
        LETTERS[(LETTERS.index(items[0]) + 1) % 26] if items[0] in LETTERS else "z"
    )
    return " ".join(items)
