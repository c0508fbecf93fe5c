"""Disjoint splits of one family into eval / ppl / pool / pretrain records.

Open families: disjoint on the problem (eval asks problems never trained on).
Closed families: disjoint on (problem, phrasing); every problem keeps at least
``MIN_TRAIN_PHRASINGS`` phrasings for pretraining so the base model can learn it,
and pretraining cycles through the remaining pairs problem by problem. With
``unseen_fraction`` > 0 a closed family also holds out that share of its
problems from every training split; they fill the same share of its eval
records (unseen problems, for EM on seen vs unseen).
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
    fam: Family,
    rng: random.Random,
    quotas: dict[str, int],
    held: frozenset[tuple[Any, ...]] = frozenset(),
) -> dict[str, list[Item]]:
    """Deal (problem, phrasing) pairs to eval/ppl/pool within each problem's spare
    phrasings; all other pairs go to pretrain, cycled up to its quota. Problems
    whose key is in ``held`` are left out of every split."""
    pairs = [
        (p, t) for p in fam.problems() if p.key not in held for t in fam.phrasings(p)
    ]
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


def held_out_problems(
    fam: Family, fraction: float, rng: random.Random
) -> frozenset[tuple[Any, ...]]:
    """Keys of ``round(fraction * problems)`` (at least one) problems of a closed
    family that no training split may contain; empty for open families or 0."""
    if not fam.closed or fraction <= 0:
        return frozenset()
    keys = sorted(p.key for p in fam.problems())
    return frozenset(rng.sample(keys, max(1, round(fraction * len(keys)))))


def split_family(
    fam: Family,
    rng: random.Random,
    quotas: dict[str, int],
    unseen_fraction: float = 0.0,
    unseen_rng: random.Random | None = None,
) -> tuple[dict[str, list[Item]], frozenset[tuple[Any, ...]]]:
    """The family's splits and the keys of its held-out (unseen) problems."""
    held = held_out_problems(fam, unseen_fraction, unseen_rng or random.Random(0))
    if not held:
        out = (split_closed if fam.closed else split_open)(fam, rng, quotas)
    else:
        unseen = [
            (p, t) for p in fam.problems() if p.key in held for t in fam.phrasings(p)
        ]
        (unseen_rng or random.Random(0)).shuffle(unseen)
        unseen = unseen[: round(unseen_fraction * quotas["eval"])]
        rest = {**quotas, "eval": quotas["eval"] - len(unseen)}
        out = split_closed(fam, rng, rest, held)
        out["eval"] = unseen + out["eval"]
    if len(out["eval"]) < quotas["eval"]:
        raise ValueError(
            f"eval_per_family: family '{fam.name}' has only {len(out['eval'])} "
            f"held-out items, fewer than {quotas['eval']}; lower eval_per_family"
        )
    return out, held
