"""Seeded fictitious words and names built from consonant-vowel syllables."""

from __future__ import annotations

import random

ONSETS = ("b", "d", "f", "g", "k", "l", "m", "n", "p", "r", "s", "t", "v", "z")
VOWELS = ("a", "e", "i", "o", "u")
CODAS = ("", "", "", "n", "r", "l", "s")


def syllable(rng: random.Random) -> str:
    return rng.choice(ONSETS) + rng.choice(VOWELS) + rng.choice(CODAS)


def make_words(
    rng: random.Random,
    n: int,
    syllables: tuple[int, int] = (2, 3),
    capitalize: bool = False,
    avoid: set[str] | None = None,
) -> list[str]:
    """``n`` distinct pronounceable words, none of them in ``avoid``."""
    seen = set(avoid or ())
    words: list[str] = []
    while len(words) < n:
        w = "".join(syllable(rng) for _ in range(rng.randint(*syllables)))
        w = w.capitalize() if capitalize else w
        if w not in seen:
            seen.add(w)
            words.append(w)
    return words
