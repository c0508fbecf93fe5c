"""String reversal of 3-4 spaced letters from a-h, e.g. "Reverse: d g a" -> "a g d"."""

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


class Reverse(Family):
    name: ClassVar[str] = "reverse"
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Reverse the letters.", "{s}"),
        Template("Write {s} backwards."),
        Template("What is {s} in reverse order?"),
        Template("Reverse this sequence: {s}"),
        Template("Spell the letters from right to left.", "{s}"),
        Template("Read {s} from the end."),
    )

    def sample(self, rng: random.Random) -> Problem:
        s = random_letters(rng, 3, 3 + self.cfg.scale, ALPHABET)
        return Problem((s,), {"s": spaced(s)}, spaced(s[::-1]))

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        return shuffled_wrong(rng, problem.answer)


FAMILY = Reverse
