"""Lookup of fictitious facts: each invented person has a home town, job and pet.

The facts are memorised, not derived, so eval asks known facts in held-out
phrasings; the world splits the people into forget and retain sets for
unlearning (see stages.world.synthetic).
"""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template
from stages.world.families.lexicon import make_words

JOBS = (
    "baker",
    "pilot",
    "farmer",
    "doctor",
    "painter",
    "sailor",
    "teacher",
    "miner",
    "singer",
    "tailor",
    "judge",
    "weaver",
)
PETS = (
    "cat",
    "dog",
    "owl",
    "goat",
    "horse",
    "parrot",
    "rabbit",
    "turtle",
    "fox",
    "crow",
)
N_CITIES = 12


class Facts(Family):
    name: ClassVar[str] = "facts"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Where does {p} live?", variant="home"),
        Template("What is the home town of {p}?", variant="home"),
        Template("In which city does {p} live?", variant="home"),
        Template("Name the town where {p} lives.", variant="home"),
        Template("Tell me where this person lives.", "{p}", variant="home"),
        Template("What does {p} do for a living?", variant="job"),
        Template("What is the job of {p}?", variant="job"),
        Template("Which trade does {p} work in?", variant="job"),
        Template("Name the profession of {p}.", variant="job"),
        Template("Tell me this person's job.", "{p}", variant="job"),
        Template("What pet does {p} keep?", variant="pet"),
        Template("Which animal lives with {p}?", variant="pet"),
        Template("What kind of pet does {p} have?", variant="pet"),
        Template("Name the pet of {p}.", variant="pet"),
        Template("Tell me this person's pet.", "{p}", variant="pet"),
    )

    def setup(self) -> None:
        self.cities = make_words(self.rng, N_CITIES, (2, 3), capitalize=True)
        n = self.cfg.facts * self.cfg.scale**2
        firsts = make_words(self.rng, n, (2, 2), True, set(self.cities))
        lasts = make_words(self.rng, n, (1, 2), True, set(self.cities) | set(firsts))
        self.people = [f"{a} {b}" for a, b in zip(firsts, lasts, strict=True)]
        self.table = {
            p: {
                "home": self.rng.choice(self.cities),
                "job": self.rng.choice(JOBS),
                "pet": self.rng.choice(PETS),
            }
            for p in self.people
        }

    def problems(self) -> list[Problem]:
        return [
            Problem((p, attr), {"p": p}, value, variant=attr, subject=p)
            for p in self.people
            for attr, value in self.table[p].items()
        ]

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        """A contradicting fact: another value of the same attribute."""
        values = {"home": self.cities, "job": JOBS, "pet": PETS}[problem.variant]
        return rng.choice([v for v in values if v != problem.answer])


FAMILY = Facts
