"""Translation between English words and a fictitious lexicon ("Velsh"), both ways."""

from __future__ import annotations

import random
from typing import ClassVar

from stages.world.families.base import Family, Problem, Template
from stages.world.families.lexicon import make_words

ENGLISH = (
    "water",
    "fire",
    "stone",
    "tree",
    "river",
    "house",
    "bread",
    "moon",
    "sun",
    "star",
    "road",
    "door",
    "bird",
    "fish",
    "salt",
    "snow",
    "rain",
    "wind",
    "gold",
    "iron",
    "milk",
    "horn",
    "ship",
    "rope",
    "lamp",
    "bell",
    "wolf",
    "bear",
    "seed",
    "leaf",
    "hill",
    "cloud",
)


class Translate(Family):
    name: ClassVar[str] = "translate"
    closed: ClassVar[bool] = True
    templates: ClassVar[tuple[Template, ...]] = (
        Template("Translate {w} into Velsh.", variant="to"),
        Template("What is the Velsh word for {w}?", variant="to"),
        Template("How do you say {w} in Velsh?", variant="to"),
        Template("Give the Velsh translation.", "{w}", variant="to"),
        Template("In Velsh, {w} is called what?", variant="to"),
        Template("Translate the Velsh word {w} into English.", variant="from"),
        Template("What does the Velsh word {w} mean?", variant="from"),
        Template("What is {w} in English?", variant="from"),
        Template("Give the English meaning of this Velsh word.", "{w}", variant="from"),
        Template("The Velsh word {w} means what?", variant="from"),
    )

    def setup(self) -> None:
        velsh = make_words(self.rng, len(ENGLISH), (2, 2), avoid=set(ENGLISH))
        self.lexicon = dict(zip(ENGLISH, velsh, strict=True))

    def problems(self) -> list[Problem]:
        to = [Problem((e, "to"), {"w": e}, v, "to") for e, v in self.lexicon.items()]
        back = [
            Problem((v, "from"), {"w": v}, e, "from") for e, v in self.lexicon.items()
        ]
        return to + back

    def wrong_answer(self, rng: random.Random, problem: Problem) -> str:
        side = self.lexicon.values() if problem.variant == "to" else self.lexicon
        return rng.choice([w for w in side if w != problem.answer])


FAMILY = Translate
