"""Intervals and paired differences from the suites' per-record files.

Reads ``predictions/<model>.jsonl`` (exact match per record),
``answers/<model>.jsonl`` (answer NLL per record) and
``documents/<model>.jsonl`` (rolling NLL, tokens, words, bytes per document)
from the output folder and returns flat metrics: ``<model>/em/<family>_lo``/
``_hi`` (Wilson), ``<model>/em/mean_lo``/``_hi`` (family-stratified bootstrap),
``_lo``/``_hi`` of ``ppl_answer`` (record bootstrap) and of ``ppl``,
``word_perplexity``, ``bits_per_byte`` (document bootstrap) and, for every pair
of models ``a`` before ``b`` in the stage's list, ``<b>-vs-<a>/em/<family>``,
``<b>-vs-<a>/em/mean`` and the same ratio metrics with ``_lo``/``_hi`` (paired
bootstrap on the records/documents both were scored on); ``byte_perplexity``
and ``ppl_paper`` (``windows/<model>.jsonl``: the paper protocol's windows)
likewise, and ``rougeL`` (mean over ``predictions``, record bootstrap).
``choices/<model>.jsonl``
(multiple choice per item) gives ``mc/acc`` and ``mc/acc_norm``, and the
predictions' ``seen`` flags ``em_seen`` / ``em_unseen``, a Wilson interval over
the pooled records and a paired-bootstrap difference. Every 0/1 difference (per
family, pooled) also gets ``_p``: McNemar's mid-p on the same records, the
alternative paired test (``paired_test: mcnemar`` marks n.s. by p >= 0.05).
"""

from __future__ import annotations

import json
from itertools import combinations
from pathlib import Path

from stages.evaluate.intervals import (
    mcnemar_midp,
    ratio_bootstrap,
    rng_seed,
    stratified_bootstrap,
    wilson,
)

Hits = dict[str, dict[str, float]]  # family -> record id -> value

# metric -> (per-model folder, denominator field, transform of sum(nll) /
# sum(den), bootstrap seed name: ppl_answer keeps the one it was published with)
RATIO_METRICS = {
    "ppl_answer": ("answers", "tokens", "exp", "ppl"),
    "ppl": ("documents", "tokens", "exp", "ppl_doc"),
    "word_perplexity": ("documents", "words", "exp", "word_perplexity"),
    "bits_per_byte": ("documents", "bytes", "bits", "bits_per_byte"),
    "byte_perplexity": ("documents", "bytes", "exp", "byte_perplexity"),
    "ppl_paper": ("windows", "tokens", "exp", "ppl_paper"),
}
# graded scores averaged over records: metric -> (per-model folder, field)
MEAN_METRICS = {"rougeL": ("predictions", "rougeL")}
# accuracies pooled over records: metric -> (per-model folder, field, the
# records it pools: (field, value) or None for all)
POOLED_METRICS = {
    "em_seen": ("predictions", "em", ("seen", True)),
    "em_unseen": ("predictions", "em", ("seen", False)),
    "mc/acc": ("choices", "acc", None),
    "mc/acc_norm": ("choices", "acc_norm", None),
}


def pair_name(a: str, b: str) -> str:
    """Metric prefix of ``b`` minus ``a``."""
    return f"{b}-vs-{a}"


def pairs(models: list[str], against_first: bool = False) -> list[tuple[str, str]]:
    """Every (earlier, later) pair in the stage's model order, or only the
    pairs (first model, later model) with ``against_first``."""
    if against_first:
        return [(models[0], m) for m in models[1:]]
    return list(combinations(models, 2))


def _read(path: Path, field: str, where: tuple[str, object] | None = None) -> Hits:
    """family -> id -> ``field`` of the records (with ``r[k] == v`` for
    ``where=(k, v)``)."""
    out: Hits = {}
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            r = json.loads(line)
            if where is not None and r.get(where[0]) is not where[1]:
                continue
            fam = r.get("family", "")  # documents have no family
            out.setdefault(fam, {})[str(r["id"])] = float(r[field])
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
        out[f"em/{fam}_p"] = mcnemar_midp(
            [a[fam][i] for i in ids], [b[fam][i] for i in ids]
        )
        strata.append(diffs)
        lo, hi = stratified_bootstrap([diffs], [*seed, len(strata)])
        out[f"em/{fam}"] = sum(diffs) / len(diffs)
        out[f"em/{fam}_lo"], out[f"em/{fam}_hi"] = lo, hi
    if strata:
        out["em/mean"] = sum(sum(d) / len(d) for d in strata) / len(strata)
        out["em/mean_lo"], out["em/mean_hi"] = stratified_bootstrap(strata, seed)
    return out


def _ratio_arrays(
    runs: list[tuple[Hits, Hits]],
) -> tuple[list[list[float]], list[list[float]]]:
    """Per-record (nll, denominator) of each model on the records all have."""
    keys = set.intersection(
        *({(f, i) for f, rs in nll.items() for i in rs} for nll, _ in runs)
    )
    keys_s = sorted(keys)
    nums = [[nll[f][i] for f, i in keys_s] for nll, _ in runs]
    dens = [[tok[f][i] for f, i in keys_s] for _, tok in runs]
    return nums, dens


def _ratio_runs(out_dir: Path, models: list[str]) -> dict[str, dict]:
    """metric -> model -> (nll, denominator) per record, for the ratio metrics
    whose files the suites wrote."""
    out: dict[str, dict] = {}
    for metric, (folder, den, _, _) in RATIO_METRICS.items():
        runs = {}
        for m in models:
            path = out_dir / folder / f"{m}.jsonl"
            if path.exists():
                runs[m] = (_read(path, "nll"), _read(path, den))
        out[metric] = runs
    return out


def _pooled_runs(out_dir: Path, models: list[str]) -> dict[str, dict]:
    """metric -> model -> {(family, id): 0/1} for the pooled accuracies."""
    out: dict[str, dict] = {}
    for metric, (folder, field, where) in POOLED_METRICS.items():
        runs = {}
        for m in models:
            hits = _read(out_dir / folder / f"{m}.jsonl", field, where)
            if hits:
                runs[m] = {(f, i): v for f, rs in hits.items() for i, v in rs.items()}
        out[metric] = runs
    return out


def pooled_difference(a: dict, b: dict, seed: list[int]) -> tuple[float, float, float]:
    """``b - a`` of a pooled accuracy on the records both have, with its
    paired-bootstrap interval."""
    keys = sorted(set(a) & set(b))
    diffs = [b[k] - a[k] for k in keys]
    if not diffs:
        return float("nan"), float("nan"), float("nan"), float("nan")
    p = mcnemar_midp([a[k] for k in keys], [b[k] for k in keys])
    return (sum(diffs) / len(diffs), *stratified_bootstrap([diffs], seed), p)


def compare(
    out_dir: Path,
    models: list[str],
    results: dict[str, dict[str, float]],
    seed: int,
    against_first: bool = False,
) -> dict[str, dict[str, float]]:
    """Adds interval keys to each model's results and returns the paired
    differences by pair name (``<b>-vs-<a>``): every pair, or each model
    against the first with ``against_first``."""
    em = {m: _read(out_dir / "predictions" / f"{m}.jsonl", "em") for m in models}
    ratios = _ratio_runs(out_dir, models)
    pooled = _pooled_runs(out_dir, models)
    means = _mean_runs(out_dir, models, results)
    for m in models:
        for metric, runs in means.items():
            if m in runs:
                values = list(runs[m].values())
                bounds = stratified_bootstrap([values], rng_seed(seed, m, metric))
                results[m][f"{metric}_lo"], results[m][f"{metric}_hi"] = bounds
        for metric, runs in pooled.items():
            if m in runs:
                hits = runs[m].values()
                bounds = wilson(round(sum(hits)), len(hits))
                results[m][f"{metric}_lo"], results[m][f"{metric}_hi"] = bounds
        if em[m]:
            results[m].update(em_intervals(em[m], rng_seed(seed, m, "em")))
        for metric, runs in ratios.items():
            if m in runs and metric in results[m]:
                nums, dens = _ratio_arrays([runs[m]])
                _, _, f, tag = RATIO_METRICS[metric]
                bounds = ratio_bootstrap(nums, dens, f, rng_seed(seed, m, tag))
                results[m][f"{metric}_lo"], results[m][f"{metric}_hi"] = bounds
    diffs: dict[str, dict[str, float]] = {}
    for a, b in pairs(models, against_first):
        name, d = pair_name(a, b), {}
        if em[a] and em[b]:
            d.update(em_difference(em[a], em[b], rng_seed(seed, name, "em")))
        for metric, runs in ratios.items():
            if a in runs and b in runs and metric in results[a]:
                nums, dens = _ratio_arrays([runs[a], runs[b]])
                _, _, f, tag = RATIO_METRICS[metric]
                lo, hi = ratio_bootstrap(nums, dens, f, rng_seed(seed, name, tag))
                d[metric] = results[b][metric] - results[a][metric]
                d[f"{metric}_lo"], d[f"{metric}_hi"] = lo, hi
        for metric, runs in pooled.items():
            if a in runs and b in runs:
                seq = rng_seed(seed, name, metric)
                v, lo, hi, p = pooled_difference(runs[a], runs[b], seq)
                d[metric], d[f"{metric}_lo"], d[f"{metric}_hi"] = v, lo, hi
                d[f"{metric}_p"] = p
        for metric, runs in means.items():
            if a in runs and b in runs:
                keys = sorted(set(runs[a]) & set(runs[b]))
                delta = [runs[b][k] - runs[a][k] for k in keys]
                if delta:
                    d[metric] = sum(delta) / len(delta)
                    seq = rng_seed(seed, name, metric)
                    d[f"{metric}_lo"], d[f"{metric}_hi"] = stratified_bootstrap(
                        [delta], seq
                    )
        if d:
            diffs[name] = d
    return diffs


def _mean_runs(
    out_dir: Path, models: list[str], results: dict[str, dict[str, float]]
) -> dict[str, dict]:
    """metric -> model -> {(family, id): value} for the graded means a model's
    results hold."""
    out: dict[str, dict] = {}
    for metric, (folder, field) in MEAN_METRICS.items():
        runs = {}
        for m in models:
            if metric not in results.get(m, {}):
                continue
            hits = _read(out_dir / folder / f"{m}.jsonl", field)
            if hits:
                runs[m] = {(f, i): v for f, rs in hits.items() for i, v in rs.items()}
        out[metric] = runs
    return out
