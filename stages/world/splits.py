"""Disjoint splits of one family into eval / ppl / pool / pretrain records.

Open families: disjoint on the problem (eval asks problems never trained on).
Closed families: disjoint on (problem, phrasing); every problem keeps at least
``MIN_TRAIN_PHRASINGS`` phrasings for pretraining so the base model can learn it,
and pretraining cycles through the remaining pairs problem by problem.
"""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

from stages.world.families import Family, Problem

MIN_TRAIN_PHRASINGS = 3
SPLITS = ("eval", "ppl", "pool", "pretrain")

Item = tuple[Problem, int]  # (problem, template index)


def split_open(
    fam: Family, rng: random.Random, quotas: dict[str, int]
) -> dict[str, list[Item]]:
    """Sample unique problems for each split in order; a random phrasing each."""
    used: set[tuple[Any, ...]] = set()
    out: dict[str, list[Item]] = {}
    for split in SPLITS:
        items: list[Item] = []
        misses = 0
        while len(items) < quotas[split] and misses < 200 + 20 * quotas[split]:
            p = fam.sample(rng)
            if p.key in used:
                misses += 1
                continue
            used.add(p.key)
            items.append((p, rng.choice(fam.phrasings(p))))
        out[split] = items
    return out


def split_closed(
    fam: Family, rng: random.Random, quotas: dict[str, int]
) -> dict[str, list[Item]]:
    """Deal (problem, phrasing) pairs to eval/ppl/pool within each problem's spare
    phrasings; all other pairs go to pretrain, cycled up to its quota."""
    pairs = [(p, t) for p in fam.problems() for t in fam.phrasings(p)]
    rng.shuffle(pairs)
    spare = {p.key: len(fam.phrasings(p)) - MIN_TRAIN_PHRASINGS for p in fam.problems()}
    out: dict[str, list[Item]] = {s: [] for s in SPLITS}
    rest: list[Item] = []
    for p, t in pairs:
        split = next((s for s in SPLITS[:3] if len(out[s]) < quotas[s]), None)
        if split is not None and spare[p.key] > 0:
            spare[p.key] -= 1
            out[split].append((p, t))
        else:
            rest.append((p, t))
    # round-robin over problems, so a short quota still covers every problem
    by_problem: dict[tuple[Any, ...], list[Item]] = defaultdict(list)
    for item in rest:
        by_problem[item[0].key].append(item)
    queues = list(by_problem.values())
    order = [
        q[i]
        for i in range(max(map(len, queues), default=0))
        for q in queues
        if i < len(q)
    ]
    want = quotas["pretrain"]
    out["pretrain"] = [order[i % len(order)] for i in range(want)] if order else []
    return out


def split_family(
    fam: Family, rng: random.Random, quotas: dict[str, int]
) -> dict[str, list[Item]]:
    out = (split_closed if fam.closed else split_open)(fam, rng, quotas)
    if len(out["eval"]) < quotas["eval"]:
        raise ValueError(
            f"eval_per_family: family '{fam.name}' has only {len(out['eval'])} "
            f"held-out items, fewer than {quotas['eval']}; lower eval_per_family"
        )
    return out
