"""The ``evaluate`` stage kind: score models on the world's held-out sets.

Suites (``carp methods evaluate``) are registered like methods: ``perplexity``
(rolling log-likelihood, lm-eval ``loglikelihood_rolling``) and ``exact_match``
(greedy answers per family). ``suites`` decides which run; ``method`` may be
omitted (default ``exact_match``) and only selects the shared Params class.
Writes ``table.md``, ``results.csv``, ``em.png`` and ``predictions/<model>.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pipelines.contract import Input, Registry, RunContext, StageParams, StageResult

PROVIDES = frozenset({"metrics"})
METHODS = Registry(
    "evaluate",
    {
        "perplexity": "stages.evaluate.perplexity",
        "exact_match": "stages.evaluate.exact_match",
    },
)
DEFAULT_METHOD = "exact_match"


class Params(StageParams):
    """Which models, which world, which suites."""

    models: list[str] = Input(
        "model", "Upstream stages whose models are scored (table columns, in order)."
    )
    data: str = Input("world", "Upstream world stage: eval/<family>.jsonl, ppl.txt.")
    suites: tuple[str, ...] = Field(
        ("perplexity", "exact_match"), description="Suites to run, in order."
    )
    max_samples_per_family: int | None = Field(
        None, ge=1, description="Score only the first N eval records of each family."
    )
    batch_size: int = Field(64, ge=1, le=4096, description="Prompts/windows per batch.")
    max_len: int = Field(
        256, ge=8, le=131072, description="Perplexity window length in tokens."
    )
    max_new_tokens: int | None = Field(
        None,
        ge=1,
        le=4096,
        description="Generation budget; default: longest reference answer + 1.",
    )

    @field_validator("suites", mode="before")
    @classmethod
    def _known_suites(cls, v: Any) -> Any:
        v = [v] if isinstance(v, str) else v
        if not isinstance(v, list | tuple) or not v:
            raise ValueError("suites: give a non-empty list such as [perplexity]")
        for s in v:
            if s not in METHODS:
                raise ValueError(
                    f"suites: unknown suite '{s}'; {METHODS.suggest(str(s))}"
                )
        return tuple(dict.fromkeys(v))

    @field_validator("models")
    @classmethod
    def _models(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("models: list at least one upstream model stage")
        return v


def _tokenizer(model_dir: Path, world_dir: Path) -> Any:
    from stages.common.io import load_tokenizer

    has_own = any(
        (model_dir / f).exists() for f in ("tokenizer.json", "tokenizer_config.json")
    )
    return load_tokenizer(model_dir if has_own else world_dir / "tokenizer")


def _resume_key(params: Params, model_dir: Path, world_dir: Path) -> str | None:
    """Key of a cached per-model result: params + both inputs' engine fingerprints."""
    parts = []
    for d in (model_dir, world_dir):
        man = d / "carp.json"
        if not man.exists():
            return None
        parts.append(str(json.loads(man.read_text()).get("fingerprint")))
    blob = params.model_dump_json(exclude={"models"}) + "|".join(parts)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def score_model(
    params: Params, model_dir: Path, world_dir: Path, out_dir: Path, ctx: RunContext
) -> dict[str, float]:
    """All suites on one model (resumed from ``ctx.checkpoint_dir`` when cached)."""
    key = _resume_key(params, model_dir, world_dir) if ctx.checkpoint_dir else None
    cache = ctx.checkpoint_dir / f"{model_dir.name}.{key}.json" if key else None
    if cache is not None and cache.exists():
        return json.loads(cache.read_text())
    from stages.common.io import load_model

    model, tok = load_model(model_dir), _tokenizer(model_dir, world_dir)
    res: dict[str, float] = {}
    for suite in params.suites:
        mod = METHODS.load(suite)
        res.update(
            mod.score(model, tok, world_dir, params, ctx, out_dir, model_dir.name)
        )
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps(res))
    return res


def run(
    params: Params, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Score every model, then write the table, CSV and chart."""
    from stages.evaluate.report import bar_chart, markdown_table, write_csv

    world = Path(inputs["data"])
    dirs = [Path(p) for p in inputs["models"]]
    names = [d.name for d in dirs]
    if len(set(names)) != len(names):
        raise ValueError(f"models: folder names must be unique, got {names}")
    results = {
        d.name: score_model(params, d, world, out_dir, ctx)
        for d in ctx.progress(dirs, "models", total=len(dirs))
    }
    table = markdown_table(results, names)
    (out_dir / "table.md").write_text(table)
    plots = []
    if "exact_match" in params.suites:
        write_csv(results, names, out_dir / "results.csv")
        bar_chart(results, names, out_dir / "em.png")
        plots = ["results.csv", "em.png"]
    metrics = {f"{m}/{k}": float(v) for m in names for k, v in results[m].items()}
    return StageResult(metrics=metrics, plots=plots, artifact="metrics", summary=table)
