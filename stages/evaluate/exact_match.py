"""Exact match: greedy answers to each family's held-out prompts, per family,
and over problems seen in training vs unseen ones.

A record is *seen* when its problem also occurs (reworded) in the world's
pretraining data or pool: every eval record of a closed family (``world.json``
``families.<f>.closed``), unless the world held it out (``unseen_fraction``:
records then carry ``seen``); open families' eval problems are unseen.
``em_seen`` / ``em_unseen`` pool the records of each side.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.io import read_jsonl, write_jsonl
from stages.evaluate.generation import greedy_generate
from stages.evaluate.scoring import exact_match, normalize_answer

EVAL_DIR = "eval"


def model_files(name: str) -> list[str]:
    """Files :func:`score` writes for model ``name`` (relative to out_dir)."""
    return [f"predictions/{name}.jsonl"]


def eval_sets(
    world_dir: Path, limit: int | None = None
) -> dict[str, list[dict[str, Any]]]:
    """Family -> held-out records (first ``limit`` of each), families sorted."""
    folder = Path(world_dir) / EVAL_DIR
    if not folder.is_dir():
        raise FileNotFoundError(f"{world_dir}: no {EVAL_DIR}/ folder; is it a world?")
    return {f.stem: list(read_jsonl(f))[:limit] for f in sorted(folder.glob("*.jsonl"))}


def seen_flags(world_dir: Path, records: list[dict[str, Any]]) -> list[bool | None]:
    """Whether each record's problem occurs in training (None: unknown, e.g. a
    world without ``world.json``)."""
    path = Path(world_dir) / "world.json"
    fams = json.loads(path.read_text()).get("families", {}) if path.exists() else {}
    closed = {f: bool(v.get("closed")) for f, v in fams.items() if "closed" in v}
    return [r.get("seen", closed.get(r["family"])) for r in records]


def seen_em(hits: list[float], seen: list[bool | None]) -> dict[str, float]:
    """``em_seen`` / ``em_unseen``: exact match pooled over each side's records."""
    out = {}
    for key, side in (("em_seen", True), ("em_unseen", False)):
        sel = [h for h, s in zip(hits, seen, strict=True) if s is side]
        if sel:
            out[key] = sum(sel) / len(sel)
    return out


def answer_budget(
    tokenizer: Any, records: list[dict[str, Any]], template: str | None = None
) -> int:
    """New tokens needed by the longest reference answer (as ``template``
    writes it; None: carp), plus eos."""
    from stages.common.templates import get_template

    tmpl = get_template(template)
    lens = [
        len(tokenizer(tmpl.response_text(r), add_special_tokens=False)["input_ids"])
        for r in records
    ]
    return max(lens, default=1) + 1


def per_family_em(
    records: list[dict[str, Any]], predictions: list[str]
) -> dict[str, float]:
    """``em/<family>`` (fraction correct) and ``em/mean`` (unweighted over families)."""
    hits: dict[str, list[float]] = {}
    for rec, pred in zip(records, predictions, strict=True):
        hits.setdefault(rec["family"], []).append(exact_match(pred, rec["output"]))
    out = {f"em/{fam}": sum(h) / len(h) for fam, h in sorted(hits.items())}
    if hits:
        out["em/mean"] = sum(out.values()) / len(hits)
    return out


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """EM per family; writes ``predictions/<name>.jsonl`` when ``out_dir`` is set."""
    sets = eval_sets(world_dir, params.max_samples_per_family)
    records = [r for recs in sets.values() for r in recs]
    template = getattr(params, "template", None)
    budget = params.max_new_tokens or answer_budget(tokenizer, records, template)
    preds = greedy_generate(
        model,
        tokenizer,
        records,
        budget,
        params.batch_size,
        ctx.progress,
        template=template,
    )
    seen = seen_flags(world_dir, records)
    hits = [exact_match(p, r["output"]) for r, p in zip(records, preds, strict=True)]
    if out_dir is not None:
        (out_dir / "predictions").mkdir(exist_ok=True)
        rows = [
            {
                "id": r["id"],
                "family": r["family"],
                "output": r["output"],
                "prediction": normalize_answer(p),
                "em": h,
                "seen": s,
            }
            for r, p, h, s in zip(records, preds, hits, seen, strict=True)
        ]
        write_jsonl(rows, out_dir / "predictions" / f"{name}.jsonl")
    return {**per_family_em(records, preds), **seen_em(hits, seen)}
