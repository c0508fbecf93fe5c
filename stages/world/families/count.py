"""Counting a letter in 3-5 spaced letters from {a, b, c}, e.g. "b in a b b" -> "2"."""

from __future__ import annotations

import itertools
import random
from typing import ClassVar

from stages.world.families.base import LETTERS, Family, Problem, Template, spaced

ALPHABET = "abc"


class Count(Family):
    name: ClassVar[str] = "count"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("How many times does {t} appear in {s}?"),
        Template("Count the letter {t}.", "{s}"),
        Template("In {s}, how often is {t} found?"),
        Template("Number of {t} in the sequence:", "{s}"),
        Template("Count how many {t} there are in {s}."),
        Template("Tell me the count of {t}.", "{s}"),
    )

    def problems(self) -> list[Problem]:
        alphabet = LETTERS[: len(ALPHABET) + self.cfg.scale - 1]  # "abc" at scale 1
        return [
            Problem((s, t), {"s": spaced(s), "t": t}, str(s.count(t)))
            for n in (3, 4, 5)
            for s in map("".join, itertools.product(alphabet, repeat=n))
            for t in alphabet
        ]

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        n = len(problem.fields["s"].split())
        return rng.choice([str(k) for k in range(n + 1) if str(k) != problem.answer])


FAMILY = Count
