"""The letter 1-3 places later in the alphabet, e.g. "2 letters after k" -> "m"."""

from __future__ import annotations

from typing import ClassVar

from stages.world.families.base import LETTERS, Family, Problem, Template

STEPS = (1, 2, 3)


class NextLetter(Family):
    name: ClassVar[str] = "next_letter"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Which letter comes {n} after {c}?"),
        Template("Count {n} forward from {c} in the alphabet."),
        Template("What is {n} after the letter {c}?"),
        Template("Skip ahead {n} from {c}."),
        Template("Move {n} along the alphabet.", "start at {c}"),
        Template("Starting at {c}, go {n} forward."),
    )

    def problems(self) -> list[Problem]:
        out = []
        steps = range(1, min(len(STEPS) * self.cfg.scale, len(LETTERS) - 1) + 1)
        for step in steps:
            n = f"{step} letter" + ("s" if step > 1 else "")
            for i, c in enumerate(LETTERS[: len(LETTERS) - step]):
                out.append(Problem((c, step), {"c": c, "n": n}, LETTERS[i + step]))
        return out


FAMILY = NextLetter
