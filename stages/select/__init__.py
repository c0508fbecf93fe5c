"""The ``select`` stage kind: choose the recovery-data subset of a pool.

Methods (``carp methods select``): ``paser`` (He et al., arXiv 2502.12594) with
its ablations as params, and the baselines ``random``, ``full``, ``perplexity``
and ``ifd``. Every method returns pool indices in preference order; this module
writes the selected records (pool ids and all fields kept, pool order), the
selection report ``selection.json`` and its plots.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from pipelines.contract import (
    Input,
    Kind,
    Registry,
    RunContext,
    StageParams,
    StageResult,
)
from stages.common.templates import TEMPLATE_DESCRIPTION, check_template
from stages.select.budget import check_budget, resolve_budget

REPORT_FILE = "selection.json"


class Params(StageParams):
    """Fields shared by every selection method."""

    pool: str = Input("dataset", "Upstream stage whose data.jsonl is the pool.")
    budget: float | int | None = Field(
        None,
        description="How much to select: a fraction of the pool in (0, 1] (0.2) "
        "or a record count >= 1 (2000).",
    )

    families: list[str] | None = Field(
        None,
        min_length=1,
        description="Keep only pool records of these task families before "
        "selecting (a capability subset, e.g. one expert's data); a fractional "
        "budget is then a fraction of that subset.",
    )

    template: str | None = Field(None, description=TEMPLATE_DESCRIPTION)

    @field_validator("template")
    @classmethod
    def _template(cls, v: str | None) -> str | None:
        return check_template(v)

    @field_validator("budget", mode="before")
    @classmethod
    def _budget_type(cls, v: Any) -> Any:
        return check_budget(v)


class BudgetParams(Params):
    """Methods that choose a subset: ``budget`` is required."""

    budget: float | int = Field(
        ...,
        description="How much to select: a fraction of the pool in (0, 1] (0.2) "
        "or a record count >= 1 (2000).",
    )


@dataclass
class Selection:
    """What a method returns: chosen pool indices (in preference order), a
    report section, flat metrics and plot files it wrote under ``out_dir``."""

    indices: list[int]
    report: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    plots: list[str] = field(default_factory=list)


def cache_root(out_dir: Path, ctx: RunContext) -> Path:
    """Where score caches live: ``select-scores/`` beside the engine's
    persistent checkpoint folder when given (shared by every select node of the
    checkout: caches are keyed by record content and model fingerprints, so a
    sweep embeds and scores a pool once), else a folder inside the output."""
    if ctx.checkpoint_dir:
        root = Path(ctx.checkpoint_dir).parent / "select-scores"
    else:
        root = Path(out_dir) / "cache"
    root.mkdir(parents=True, exist_ok=True)
    return root


def run(
    params: Params, inputs: dict[str, Path], out_dir: Path, ctx: RunContext
) -> StageResult:
    """Select from ``inputs['pool']`` with ``params.method``; write the subset."""
    from stages.common.io import read_dataset, write_dataset

    t0 = time.perf_counter()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    pool_dir = Path(inputs["pool"])
    pool = read_dataset(pool_dir)
    if not pool:
        raise ValueError(f"pool: '{pool_dir.name}' has an empty data.jsonl")
    if params.families:
        known = sorted({str(r.get("family")) for r in pool})
        unknown = sorted(set(params.families) - set(known))
        if unknown:
            raise ValueError(
                f"families: {', '.join(unknown)} not in pool '{pool_dir.name}' "
                f"(its families: {', '.join(known)})"
            )
        pool = [r for r in pool if r.get("family") in params.families]
    seed = ctx.seed
    n = resolve_budget(params.budget, len(pool), pool_dir.name)
    method = KIND.method(params.method)
    sel = method.select(params, pool, n, inputs, out_dir, ctx, seed)

    idx = sel.indices
    if len(set(idx)) != len(idx) or len(idx) > n:
        raise RuntimeError(f"method '{params.method}' returned an invalid selection")
    chosen = sorted(idx)
    records = [pool[i] for i in chosen]
    write_dataset(
        records,
        out_dir,
        source=pool_dir.name,
        method=params.method,
        pool_count=len(pool),
        budget=n,
    )
    corrupted = sum(bool(pool[i].get("corrupted")) for i in idx)
    pool_corrupted = sum(bool(r.get("corrupted")) for r in pool)
    report = {
        "method": params.method,
        "params": params.model_dump(mode="json"),
        "seed": seed,
        "pool": pool_dir.name,
        "pool_size": len(pool),
        "budget": n,
        "selected": len(idx),
        "families": _count(pool[i].get("family") for i in idx),
        "pool_families": _count(r.get("family") for r in pool),
        "corrupted_selected": corrupted,
        "corrupted_in_pool": pool_corrupted,
        **sel.report,
        "seconds_total": time.perf_counter() - t0,
    }
    (out_dir / REPORT_FILE).write_text(json.dumps(report, indent=2, sort_keys=True))
    metrics = {
        "selected": float(len(idx)),
        "selected_fraction": len(idx) / len(pool),
        "corrupted_selected": float(corrupted),
        "seconds": report["seconds_total"],
        **sel.metrics,
    }
    return StageResult(
        metrics=metrics,
        plots=sel.plots,
        datasets=["data.jsonl"],
        reports=[REPORT_FILE],  # holds time per phase: not part of the fingerprint
        summary=f"{params.method}: selected {len(idx)} of {len(pool)} records "
        f"(budget {n}) from '{pool_dir.name}'",
        extra_manifest={"selection_report": REPORT_FILE, **_device_facts(params)},
    )


def _device_facts(params: Any) -> dict[str, str]:
    """Device and dtype a model-running selection scored on (none for the
    methods that run no model)."""
    from stages.common.device import pick_device
    from stages.select.lmparams import LMParams

    if not isinstance(params, LMParams):
        return {}

    return {"device": pick_device(params.device), "dtype": params.dtype}


def _count(values: Any) -> dict[str, int]:
    out: dict[str, int] = {}
    for v in values:
        out[str(v)] = out.get(str(v), 0) + 1
    return dict(sorted(out.items()))


METHODS = Registry(
    "select method",
    {
        "random": "stages.select.random",
        "full": "stages.select.full",
        "paser": "stages.select.paser",
        "perplexity": "stages.select.perplexity",
        "ifd": "stages.select.ifd",
    },
    base=Params,
    entry="select",
)


def sizes(params: Params, upstream: Any) -> dict[str, int]:
    """Records selected: a count as given, a fraction of the pool's records
    (as :func:`resolve_budget` rounds it), the whole pool without a budget."""
    pool = upstream.get("pool", {}).get("records")
    b = params.budget
    if type(b) is int:
        return {"records": b, "scored": b}
    if pool is None:
        return {}
    n = pool if b is None else resolve_budget(b, pool)
    return {"records": n, "scored": n}


KIND = Kind(
    name="select",
    params=Params,
    methods=METHODS,
    run=run,
    provides=frozenset({"dataset"}),
    resumable=True,  # score caches (embeddings, JSD) live in ctx.checkpoint_dir
    sizes=sizes,
    budgets={"budget": "pool"},
)
