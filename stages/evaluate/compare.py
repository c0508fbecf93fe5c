"""Intervals and paired differences from the suites' per-record files.

Reads ``predictions/<model>.jsonl`` (exact match per record) and
``answers/<model>.jsonl`` (answer NLL per record) from the output folder and
returns flat metrics: ``<model>/em/<family>_lo``/``_hi`` (Wilson),
``<model>/em/mean_lo``/``_hi`` (family-stratified bootstrap),
``<model>/ppl_answer_lo``/``_hi`` (record bootstrap) and, for every pair of
models ``a`` before ``b`` in the stage's list, ``<b>-vs-<a>/em/<family>``,
``<b>-vs-<a>/em/mean`` and ``<b>-vs-<a>/ppl_answer`` with ``_lo``/``_hi``
(paired bootstrap on the records both were scored on).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from stages.evaluate.intervals import (
    ratio_bootstrap,
    rng_seed,
    stratified_bootstrap,
    wilson,
)

Hits = dict[str, dict[str, float]]  # family -> record id -> value


def pair_name(a: str, b: str) -> str:
    """Metric prefix of ``b`` minus ``a``."""
    return f"{b}-vs-{a}"


def pairs(models: list[str]) -> list[tuple[str, str]]:
    """Every (earlier, later) pair in the stage's model order."""
    return list(combinations(models, 2))


def _read(path: Path, field: str) -> Hits:
    out: Hits = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            out.setdefault(r["family"], {})[str(r["id"])] = float(r[field])
    return out


def em_intervals(hits: Hits, seed: list[int]) -> dict[str, float]:
    """Wilson per family; stratified bootstrap for the mean over families."""
    out: dict[str, float] = {}
    for fam, recs in sorted(hits.items()):
        lo, hi = wilson(round(sum(recs.values())), len(recs))
        out[f"em/{fam}_lo"], out[f"em/{fam}_hi"] = lo, hi
    if hits:
        strata = [list(hits[f].values()) for f in sorted(hits)]
        lo, hi = stratified_bootstrap(strata, seed)
        out["em/mean_lo"], out["em/mean_hi"] = lo, hi
    return out


def em_difference(a: Hits, b: Hits, seed: list[int]) -> dict[str, float]:
    """``b - a`` per family and for the mean, on the records both have."""
    out: dict[str, float] = {}
    strata = []
    for fam in sorted(set(a) & set(b)):
        ids = sorted(set(a[fam]) & set(b[fam]))
        if not ids:
            continue
        diffs = [b[fam][i] - a[fam][i] for i in ids]
        strata.append(diffs)
        lo, hi = stratified_bootstrap([diffs], [*seed, len(strata)])
        out[f"em/{fam}"] = sum(diffs) / len(diffs)
        out[f"em/{fam}_lo"], out[f"em/{fam}_hi"] = lo, hi
    if strata:
        out["em/mean"] = sum(sum(d) / len(d) for d in strata) / len(strata)
        out["em/mean_lo"], out["em/mean_hi"] = stratified_bootstrap(strata, seed)
    return out


def _answer_arrays(
    runs: list[tuple[Hits, Hits]],
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-record (nll, tokens) of each model on the records all of them have."""
    keys = set.intersection(
        *({(f, i) for f, rs in nll.items() for i in rs} for nll, _ in runs)
    )
    keys_s = sorted(keys)
    nums = [[nll[f][i] for f, i in keys_s] for nll, _ in runs]
    dens = [[tok[f][i] for f, i in keys_s] for _, tok in runs]
    return nums, dens


def compare(
    out_dir: Path,
    models: list[str],
    results: dict[str, dict[str, float]],
    seed: int,
) -> dict[str, dict[str, float]]:
    """Adds interval keys to each model's results and returns the paired
    differences by pair name (``<b>-vs-<a>``)."""
    em = {m: _read(out_dir / "predictions" / f"{m}.jsonl", "em") for m in models}
    ans = {
        m: (
            _read(out_dir / "answers" / f"{m}.jsonl", "nll"),
            _read(out_dir / "answers" / f"{m}.jsonl", "tokens"),
        )
        for m in models
    }
    for m in models:
        if em[m]:
            results[m].update(em_intervals(em[m], rng_seed(seed, m, "em")))
        if ans[m][0]:
            nums, dens = _answer_arrays([ans[m]])
            lo, hi = ratio_bootstrap(nums, dens, seed=rng_seed(seed, m, "ppl"))
            results[m]["ppl_answer_lo"], results[m]["ppl_answer_hi"] = lo, hi
    diffs: dict[str, dict[str, float]] = {}
    for a, b in pairs(models):
        name, d = pair_name(a, b), {}
        if em[a] and em[b]:
            d.update(em_difference(em[a], em[b], rng_seed(seed, name, "em")))
        if ans[a][0] and ans[b][0] and "ppl_answer" in results[a]:
            nums, dens = _answer_arrays([ans[a], ans[b]])
            lo, hi = ratio_bootstrap(nums, dens, seed=rng_seed(seed, name, "ppl"))
            d["ppl_answer"] = results[b]["ppl_answer"] - results[a]["ppl_answer"]
            d["ppl_answer_lo"], d["ppl_answer_hi"] = lo, hi
        if d:
            diffs[name] = d
    return diffs
