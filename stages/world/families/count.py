"""Counting a letter's occurrences in 4-8 spaced letters from {a, b, c, d}."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import (
    Family,
    Problem,
    Template,
    random_letters,
    spaced,
    wrong_number,
)

ALPHABET = "abcd"


class Count(Family):
    name: ClassVar[str] = "count"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("How many times does {t} appear in {s}?"),
        Template("Count the letter {t}.", "{s}"),
        Template("In {s}, how often is {t} found?"),
        Template("Number of {t} in the sequence:", "{s}"),
        Template("Count how many {t} there are in {s}."),
        Template("Tell me the count of {t}.", "{s}"),
    )

    def sample(self, rng: random.Random) -> Problem:
        s = random_letters(rng, 4, 8, ALPHABET)
        t = rng.choice(ALPHABET)
        return Problem((s, t), {"s": spaced(s), "t": t}, str(s.count(t)))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return wrong_number(rng, int(problem.answer))


FAMILY = Count
