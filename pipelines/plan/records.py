"""How long a world's records are, before the world is built: what bounds the
rows of a training batch (batches pad to their longest record)."""

from __future__ import annotations

import random
from typing import Any


def longest_document(params: Any, samples: int = 100, seed: int = 0) -> int:
    """UTF-8 bytes of the longest record text (prompt + response, as
    ``stages.world.synthetic.document``) the world's families phrase: every
    phrasing of ``samples`` problems per family (the whole table of a smaller
    closed family). A byte-level tokenizer emits at most one token per byte, so
    this bounds a record's tokens."""
    from stages.world.families import FamilyConfig, load_family
    from stages.world.synthetic import document

    cfg = FamilyConfig(facts=params.facts, scale=params.table_scale)
    longest = 0
    for name in params.families:
        fam = load_family(name)(random.Random(f"{seed}:{name}:setup"), cfg)
        rng = random.Random(f"{seed}:{name}:plan")
        if fam.closed:
            table = fam.problems()
            problems = rng.sample(table, min(samples, len(table)))
        else:
            problems = [fam.sample(rng) for _ in range(samples)]
        for p in problems:
            for t in fam.phrasings(p):
                longest = max(longest, len(document(fam.render(p, t)).encode()))
    return longest
