"""Alphabetical sorting of 3-4 spaced letters from a-h, e.g. "d g a" -> "a d g"."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import (
    Family,
    Problem,
    Template,
    random_letters,
    shuffled_wrong,
    spaced,
)

ALPHABET = "abcdefgh"


class Sort(Family):
    name: ClassVar[str] = "sort"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Sort the letters alphabetically.", "{s}"),
        Template("Put {s} in alphabetical order."),
        Template("Arrange these letters from a to z: {s}"),
        Template("Order the letters.", "{s}"),
        Template("What is {s} sorted?"),
        Template("List {s} in dictionary order."),
    )

    def sample(self, rng: random.Random) -> Problem:
        s = random_letters(rng, 3, 3 + self.cfg.scale, ALPHABET)
        return Problem((s,), {"s": spaced(s)}, spaced(sorted(s)))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return shuffled_wrong(rng, problem.answer)


FAMILY = Sort
