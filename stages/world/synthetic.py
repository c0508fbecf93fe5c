"""Seeded synthetic capability world: task families, splits, facts, tokenizer.

Writes the world artifact (docs/stage-contract.md): the recovery pool
``data.jsonl`` + ``dataset.json``, ``eval/<family>.jsonl``, ``pretrain.jsonl``,
``ppl.txt``, ``forget.jsonl`` / ``retain.jsonl`` (people of the ``facts``
family), ``tokenizer/`` and ``world.json``. Same params -> identical bytes.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

from pipelines.contract import RunContext, StageResult
from stages.common.io import write_dataset, write_jsonl
from stages.common.text import format_prompt, format_response
from stages.world import Params as WorldParams
from stages.world.families import Family, FamilyConfig, describe_family, load_family
from stages.world.splits import MIN_TRAIN_PHRASINGS, SPLITS, Item, split_family
from stages.world.tokenizer import save_tokenizer, train_tokenizer

PPL_SEPARATOR = "\n\n"  # between documents of ppl.txt


class Params(WorldParams):
    method: Literal["synthetic"] = "synthetic"


def shares(total: int, n: int) -> list[int]:
    """``total`` split into ``n`` near-equal integer parts (earlier ones larger)."""
    return [total // n + (1 if i < total % n else 0) for i in range(n)]


def as_record(fam: Family, item: Item, rid: str) -> dict[str, Any]:
    problem, template = item
    return {"id": rid, **fam.render(problem, template)}


def document(rec: dict[str, Any]) -> str:
    """The text a causal LM sees for a record (prompt + response, no specials)."""
    return format_prompt(rec) + format_response(rec)


def corrupt_pool(
    pool: list[tuple[Family, Item, dict[str, Any]]], noise: float, rng: random.Random
) -> int:
    """Give exactly ``round(noise * len(pool))`` records a wrong answer, flagged."""
    n = round(noise * len(pool))
    for i in sorted(rng.sample(range(len(pool)), n)):
        fam, (problem, _), rec = pool[i]
        rec["output"] = fam.wrong_answer(rng, problem)
        rec["corrupted"] = True
    return n


def unlearning_split(
    fam: Family,
    fraction: float,
    rng: random.Random,
    holdout: float = 0.0,
    unseen: frozenset = frozenset(),
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """Forget / retain / holdout records: every phrasing of every fact of each
    person, except facts held out as unseen (never trained on). Holdout people
    are drawn from the non-forget ones with their own random stream, so forget
    stays the same whatever ``holdout`` is."""
    people = sorted({p.subject for p in fam.problems()})
    n_forget = max(1, round(fraction * len(people))) if fraction > 0 else 0
    forget_people = set(rng.sample(people, n_forget))
    rest = [p for p in people if p not in forget_people]
    n_hold = max(1, round(holdout * len(rest))) if holdout > 0 else 0
    hold_people = set(random.Random(f"{rng.random()}:holdout").sample(rest, n_hold))
    sides: dict[str, list[dict[str, Any]]] = {"forget": [], "retain": [], "holdout": []}
    for p in fam.problems():
        if p.key in unseen:
            continue
        prefix = (
            "forget"
            if p.subject in forget_people
            else "holdout"
            if p.subject in hold_people
            else "retain"
        )
        side = sides[prefix]
        for t in fam.phrasings(p):
            rec = as_record(fam, (p, t), f"{prefix}-{len(side)}")
            side.append({**rec, "subject": p.subject})
    return sides["forget"], sides["retain"], sides["holdout"]


def build(params: Params, out_dir: Path, ctx: RunContext) -> StageResult:
    """Generate every split of every family and write the world folder."""
    seed = ctx.seed
    cfg = FamilyConfig(facts=params.facts, scale=params.table_scale)
    names = list(params.families)
    quotas = {
        "pool": shares(params.pool_size, len(names)),
        "pretrain": shares(params.pretrain_size, len(names)),
        "ppl": shares(params.ppl_size, len(names)),
    }
    fams: dict[str, Family] = {}
    records: dict[str, list[tuple[Family, Item, dict[str, Any]]]] = {
        s: [] for s in SPLITS
    }
    counts: dict[str, dict[str, int]] = {}
    held: dict[str, frozenset] = {}  # unseen problems of closed families
    for i, name in enumerate(ctx.progress(names, "families")):
        fam = load_family(name)(random.Random(f"{seed}:{name}:setup"), cfg)
        fams[name] = fam
        q = {"eval": params.eval_per_family, **{k: v[i] for k, v in quotas.items()}}
        parts, held[name] = split_family(
            fam,
            random.Random(f"{seed}:{name}:split"),
            q,
            params.unseen_fraction,
            random.Random(f"{seed}:{name}:unseen"),
        )
        counts[name] = {s: len(parts[s]) for s in SPLITS}
        for split, items in parts.items():
            for n, item in enumerate(items):
                rec = as_record(fam, item, f"{split}-{name}-{n}")
                if split == "eval" and params.unseen_fraction > 0:
                    rec["seen"] = fam.closed and item[0].key not in held[name]
                records[split].append((fam, item, rec))

    for split in ("pool", "pretrain", "ppl"):
        random.Random(f"{seed}:{split}:order").shuffle(records[split])
    n_corrupt = corrupt_pool(
        records["pool"], params.noise, random.Random(f"{seed}:noise")
    )
    pool = [r for _, _, r in records["pool"]]
    pretrain = [r for _, _, r in records["pretrain"]]

    write_dataset(
        pool,
        out_dir,
        source="world:synthetic",
        seed=seed,
        families=names,
        corrupted=n_corrupt,
    )
    (out_dir / "eval").mkdir()
    for name in names:
        write_jsonl(
            [r for f, _, r in records["eval"] if f.name == name],
            out_dir / "eval" / f"{name}.jsonl",
        )
    write_jsonl(pretrain, out_dir / "pretrain.jsonl")
    ppl_docs = [document(r) for _, _, r in records["ppl"]]
    (out_dir / "ppl.txt").write_text(
        PPL_SEPARATOR.join(ppl_docs) + "\n", encoding="utf-8"
    )

    forget: list[dict[str, Any]] = []
    retain: list[dict[str, Any]] = []
    holdout: list[dict[str, Any]] = []
    if "facts" in fams:
        forget, retain, holdout = unlearning_split(
            fams["facts"],
            params.forget_fraction,
            random.Random(f"{seed}:forget"),
            params.holdout_fraction,
            held["facts"],
        )
    write_jsonl(forget, out_dir / "forget.jsonl")
    write_jsonl(retain, out_dir / "retain.jsonl")
    if params.holdout_fraction > 0:  # absent by default: worlds stay byte-identical
        write_jsonl(holdout, out_dir / "holdout.jsonl")

    texts = [document(r) for r in pretrain + pool]
    save_tokenizer(train_tokenizer(texts, params.vocab_size), out_dir / "tokenizer")

    totals = {s: sum(c[s] for c in counts.values()) for s in SPLITS}
    world = {
        "method": "synthetic",
        "seed": seed,
        "families": {
            name: {
                "description": describe_family(name),
                "closed": fam.closed,
                "templates": [
                    [t.instruction, t.input, t.variant] for t in fam.templates
                ],
                "counts": counts[name],
            }
            for name, fam in fams.items()
        },
        "counts": {
            **totals,
            "forget": len(forget),
            "retain": len(retain),
            **({"holdout": len(holdout)} if params.holdout_fraction > 0 else {}),
        },
        "noise": {"fraction": params.noise, "corrupted": n_corrupt},
        "facts": {
            "people": params.facts if "facts" in fams else 0,
            "forget_fraction": params.forget_fraction,
            **(
                {"holdout_fraction": params.holdout_fraction}
                if params.holdout_fraction > 0
                else {}
            ),
        },
        "vocab_size": params.vocab_size,
        **({"table_scale": params.table_scale} if params.table_scale != 1 else {}),
        **(
            {
                "unseen_fraction": params.unseen_fraction,
                "unseen_problems": {n: len(h) for n, h in held.items() if h},
            }
            if params.unseen_fraction > 0
            else {}
        ),
        "min_train_phrasings": MIN_TRAIN_PHRASINGS,
        "splits": "open families: disjoint problems; closed families: disjoint "
        "(problem, phrasing) pairs, so eval asks trained problems in held-out "
        "phrasings",
    }
    (out_dir / "world.json").write_text(json.dumps(world, indent=2, sort_keys=True))
    metrics = {f"count/{k}": float(v) for k, v in world["counts"].items()}
    metrics["count/corrupted"] = float(n_corrupt)
    summary = ", ".join(f"{k} {v}" for k, v in world["counts"].items())
    return StageResult(
        metrics=metrics,
        datasets=["data.jsonl", "pretrain.jsonl", "forget.jsonl", "retain.jsonl"]
        + (["holdout.jsonl"] if params.holdout_fraction > 0 else [])
        + [f"eval/{name}.jsonl" for name in names],
        summary=f"world: {len(names)} families; {summary}; {n_corrupt} corrupted",
    )
