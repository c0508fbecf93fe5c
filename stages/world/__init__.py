"""The ``world`` stage kind: the embedded synthetic capability world.

One method, ``synthetic`` (the default): seeded task families
(``stages.world.families``), disjoint splits, fictitious facts with forget /
retain sets and a tokenizer trained on the world's text. The ``pretrain`` kind
(``stages.world.pretrain``) trains the tiny base model on it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pipelines.contract import Kind, Registry, RunContext, StageParams, StageResult
from stages.world.families import FAMILIES

DEFAULT_METHOD = "synthetic"


class Params(StageParams):
    """World size and content; defaults are the ones the base model is tuned on."""

    method: str = Field(DEFAULT_METHOD, description="World generator.")
    families: tuple[str, ...] = Field(
        tuple(FAMILIES),
        description="Task families to generate (default: all registered ones).",
    )
    pool_size: int = Field(
        3000,
        ge=0,
        le=10_000_000,
        description="Records in the recovery pool data.jsonl, split over families "
        "(closed families stop early when their spare phrasings run out).",
    )
    eval_per_family: int = Field(
        50, ge=1, le=100_000, description="Held-out eval records per family."
    )
    pretrain_size: int = Field(
        30000,
        ge=1,
        le=10_000_000,
        description="Records in pretrain.jsonl (the base model's training data).",
    )
    ppl_size: int = Field(
        180,
        ge=0,
        le=1_000_000,
        description="Held-out records rendered as documents into ppl.txt.",
    )
    facts: int = Field(
        48,
        ge=2,
        le=5000,
        description="Fictitious people in the facts family (3 facts each).",
    )
    forget_fraction: float = Field(
        0.1,
        ge=0,
        lt=1,
        description="Fraction of the fictitious people whose facts form forget.jsonl.",
    )
    holdout_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Fraction of the non-forget people set aside as holdout.jsonl "
        "(never in retain.jsonl; the pretrain kind's `exclude: [holdout]` keeps "
        "them out of training): the non-members of membership inference.",
    )
    unseen_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Share of each closed family's problems held out of every "
        "training split (pretrain, pool, ppl, forget/retain) and of its eval "
        "records drawn from them; eval records then carry `seen` (open families' "
        "eval problems are always unseen). 0: every closed-family eval problem "
        "is also trained on, reworded.",
    )
    noise: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Fraction of pool records given a wrong answer or a "
        "contradicting fact, each flagged `corrupted: true`.",
    )
    table_scale: int = Field(
        1,
        ge=1,
        le=6,
        description="Widen the families' problem spaces for large pools (scale "
        "benchmarks): add/sub operands below 15·s, maximum over 0..10·s-1, count "
        "over s+2 letters, next_letter steps up to 3·s, s² times the fictitious "
        "people, reverse/sort strings up to 3+s letters (translate keeps its "
        "lexicon). 1: the tuned defaults the base model is trained on.",
    )
    vocab_size: int = Field(
        1024,
        ge=300,
        le=65536,
        description="BPE vocabulary size of the tokenizer (>= 259: 256 bytes + 3 "
        "specials).",
    )

    @field_validator("families", mode="before")
    @classmethod
    def _known_families(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list | tuple) or not v:
            raise ValueError("families: give a non-empty list such as [add, facts]")
        for name in v:
            if name not in FAMILIES:
                raise ValueError(f"families: {FAMILIES.unknown(str(name))}")
        if len(set(v)) != len(v):
            raise ValueError("families: each family may be listed only once")
        return tuple(v)


def run(
    params: Params, inputs: dict[str, Path], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Build the world into ``out_dir`` with the method named by ``params``."""
    return KIND.method(params.method).build(params, out_dir, ctx)


def family_modules(params: Params) -> list[str]:
    """The family modules a world node generates from (part of its code)."""
    return [FAMILIES.target(f) for f in params.families]


METHODS = Registry(
    "world method",
    {"synthetic": "stages.world.synthetic"},
    base=Params,
    entry="build",
)


def sizes(params: Params, upstream: Any) -> dict[str, int]:
    """The pool's records (at most ``pool_size``: closed families may stop
    early) and the evaluation sets' shape."""
    return {
        "records": params.pool_size,
        "eval_per_family": params.eval_per_family,
        "eval_families": len(params.families),
    }


KIND = Kind(
    name="world",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"world", "dataset", "tokenizer"}),
    default_method=DEFAULT_METHOD,
    plots=False,
    code=family_modules,
    catalogs=(FAMILIES,),
    sizes=sizes,
)
