"""Study tables for ``carp report``: a sweep compared with a declared baseline,
and what the select stages took.

A declaration with ``report: {baseline: rec_random}`` gets, for each evaluate
stage that scored variants of the baseline, one table of mean exact match per
swept method and label (e.g. budget) with the paired difference against the
baseline's variant of the same label and seed (bootstrap over seeds and eval
records, ``stages.select.study.paired_difference``), and the same per family.
Every select output (``selection.json``) gets a row: clusters and their ARI
against the families, records selected, corrupted records taken against random's
95% hypergeometric range.

``sweep_table`` and ``selection_table`` are pure (arrays and dicts in, Markdown
out); ``read_em`` and ``study_sections`` read a run's folders.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from stages.select.study import (
    paired_difference,
    parse_variant,
    pooled_difference,
    random_corrupted_range,
)

# pooled cells: (stage, method labels, budget) -> [(diff, replicates, lo, hi)]
Pooled = dict[tuple[str, tuple[str, ...], float | None], list[tuple]]


def read_em(eval_dir: Path) -> tuple[dict[str, np.ndarray], list[str]]:
    """0/1 exact match per model over the same records (sorted by id) and the
    records' families, from ``<eval>/predictions/<model>.jsonl``."""
    em: dict[str, np.ndarray] = {}
    ids: list[str] = []
    fams: list[str] = []
    for f in sorted((eval_dir / "predictions").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line]
        rows.sort(key=lambda r: r["id"])
        if not ids:
            ids = [r["id"] for r in rows]
            fams = [r["family"] for r in rows]
        if [r["id"] for r in rows] != ids:
            raise ValueError(
                f"{f}: scored on other records than {eval_dir.name}'s first model; "
                "evaluate every model on the same data"
            )
        em[f.stem] = np.array([float(r["em"]) for r in rows])
    return em, fams


def _mean_em(a: np.ndarray, fam: np.ndarray, names: list[str]) -> float:
    return float(np.mean([a[fam == f].mean() for f in names]))


def _cell(d: tuple[float, float, float], fmt: str) -> str:
    point, lo, hi = d
    mark = "" if lo > 0 or hi < 0 else " n.s."
    return f"{point:{fmt}} [{lo:{fmt}}, {hi:{fmt}}]{mark}"


def sweep_table(
    em: Mapping[str, np.ndarray],
    families: Sequence[str],
    baseline: str,
    n_boot: int = 2000,
    pooled: Pooled | None = None,
) -> str:
    """Markdown: mean EM (mean of family means) of every model; for the seed
    variants of a swept stage, mean ± std over seeds and the paired difference
    against ``baseline``'s variants with the same other labels and seeds;
    then the same differences per family. ``baseline`` is a stage
    (``rec_random``) or a stage with labels (``rec_paser@faithful``: the
    variants carrying those labels; ``rec_full``, recovered once on the whole
    pool without budget or seed, is the baseline of every budget and seed of
    its world and regime). Empty when the baseline is not among the models.
    ``pooled`` (a dict) collects each difference under its method's own labels
    (those the baseline run lacks) and budget, for :func:`pooled_table`."""
    fam = np.asarray(families)
    names = sorted(set(fam.tolist()))
    groups: dict[tuple[str, float | None], dict[int, np.ndarray]] = defaultdict(dict)
    labels: dict[str, tuple[str, tuple[str, ...]]] = {}  # method -> stage, labels
    single: list[str] = []
    b_stage, _, b_label = baseline.partition("@")
    b_labels = set(b_label.split("-")) if b_label else set()
    fixed: dict[tuple[str, ...], np.ndarray] = {}  # a seedless, budget-free baseline
    for model, arr in em.items():
        v = parse_variant(model)
        if v.seed is None and v.budget is None:
            single.append(model)
            if v.stage == b_stage and b_labels <= set(v.labels):
                fixed[v.labels] = arr
        else:  # a deterministic selection at a budget runs once: seed None
            groups[(v.method, v.budget)][v.seed] = arr
            labels[v.method] = (v.stage, v.labels)

    def is_baseline(method: str) -> bool:
        stage, own = labels[method]
        return stage == b_stage and b_labels <= set(own)

    if not fixed and not any(is_baseline(method) for method, _ in groups):
        return ""

    def baseline_of(
        method: str, budget: float | None
    ) -> tuple[tuple[str, ...], dict[int, np.ndarray]]:
        """The baseline's runs at the same budget whose other labels (world,
        regime) the method's include; the most specific one. A baseline run
        with neither budget nor seed (the full pool, recovered once) stands
        for every budget and seed."""
        own = set(labels[method][1])
        fits = [
            (len(labels[m][1]), labels[m][1], runs)
            for (m, b), runs in groups.items()
            if is_baseline(m) and b == budget and set(labels[m][1]) - b_labels <= own
        ]
        fits += [
            (len(lab), lab, {None: arr})
            for lab, arr in fixed.items()
            if set(lab) - b_labels <= own
        ]
        best = max(fits, key=lambda t: t[0]) if fits else (0, (), {})
        return best[1], best[2]

    lines = [
        f"Mean EM (mean of family means) and the paired difference against "
        f"`{baseline}` at the same budget, seed and other labels (95% bootstrap "
        "over seeds and records; n.s.: the interval holds 0).",
        "",
        "| model | budget | seeds | mean EM | − baseline [95% CI] |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {m} | – | – | {_mean_em(em[m], fam, names):.3f} | – |" for m in single
    ]
    per_family: list[str] = []
    for (method, label), runs in sorted(
        groups.items(), key=lambda kv: (kv[0][1] or 0.0, kv[0][0])
    ):
        ems = [_mean_em(a, fam, names) for a in runs.values()]
        spread = float(np.std(ems, ddof=1)) if len(ems) > 1 else 0.0
        n_runs = len(runs)
        cell = "–"
        base_labels, base_runs = baseline_of(method, label)
        # a run without seed (recovered once) stands for each seed of the other side
        if None in runs and None not in base_runs:
            runs = dict.fromkeys(base_runs, runs[None])
        elif None in base_runs and None not in runs:
            base_runs = dict.fromkeys(runs, base_runs[None])
        if not is_baseline(method) and set(runs) & set(base_runs):
            reps: list[np.ndarray] = []
            d = paired_difference(
                runs, base_runs, list(fam), n_boot, keep_replicates=reps
            )
            cell = _cell(d["mean"], "+.3f")
            if pooled is not None:
                stage, own = labels[method]
                key = (stage, tuple(x for x in own if x not in base_labels), label)
                pooled.setdefault(key, []).append(
                    (d["mean"][0], reps[0], *d["mean"][1:])
                )
            per_family.append(
                f"| {method} | {'–' if label is None else f'{label:g}'} | "
                + " | ".join(_cell(d[f], "+.2f") for f in names)
                + " |"
            )
        lines.append(
            f"| {method} | {'–' if label is None else f'{label:g}'} | {n_runs} | "
            f"{np.mean(ems):.3f} ± {spread:.3f} | {cell} |"
        )
    if per_family:
        lines += [
            "",
            f"Per family, difference against `{baseline}` [95% CI]:",
            "",
            "| model | budget | " + " | ".join(names) + " |",
            "|---|---|" + "---|" * len(names),
            *per_family,
        ]
    return "\n".join(lines) + "\n"


def pooled_table(pooled: Pooled, baseline: str) -> str:
    """Markdown: per method and budget, the mean over the study's cells (each
    evaluate stage's worlds and regimes) of the paired difference against
    ``baseline``, with a 95% interval from the cells' pooled bootstrap
    replicates, and how many cells are above / below 0 on their own interval."""
    rows = []
    for (stage, own, budget), cells in sorted(
        pooled.items(), key=lambda kv: (kv[0][2] or 0.0, kv[0][0], kv[0][1])
    ):
        point, lo, hi = pooled_difference([(c[0], c[1]) for c in cells])
        up = sum(c[2] > 0 for c in cells)
        down = sum(c[3] < 0 for c in cells)
        name = stage + ("@" + "-".join(own) if own else "")
        rows.append(
            f"| {name} | {'–' if budget is None else f'{budget:g}'} | {len(cells)} | "
            f"{_cell((point, lo, hi), '+.4f')} | {up} | {down} |"
        )
    if not rows:
        return ""
    return (
        "\n".join(
            [
                f"Mean over cells (every world and regime) of the paired difference "
                f"against `{baseline}`; 95% interval from the cells' bootstrap "
                "replicates averaged index by index (replicate b resamples every cell "
                "with the same draws, so cells sharing eval records move together); "
                "cells whose own interval lies above / below 0.",
                "",
                "| model | budget | cells | mean difference [95% CI] | cells above 0 | "
                "cells below 0 |",
                "|---|---|---|---|---|---|",
                *rows,
            ]
        )
        + "\n"
    )


def selection_table(reports: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    """Markdown: one row per select output (node name, its ``selection.json``):
    clusters K and their ARI against the families, records selected, corrupted
    records taken (noisy pools) against random's 95% range, and the records the
    noise filter flagged (of them corrupted)."""
    lines = [
        "| select node | method | K | ARI vs families | selected | "
        "corrupted selected | random: expected [95% range] | flagged (corrupted) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rep in reports:
        ari = rep.get("ari_vs_family")
        bad = int(rep.get("corrupted_in_pool", 0))
        rnd = "–"
        if bad:
            m, lo, hi = random_corrupted_range(rep["pool_size"], bad, rep["selected"])
            rnd = f"{m:.1f} [{lo}, {hi}]"
        flagged = (
            f"{rep['noise_flagged']} ({rep['noise_flagged_corrupted']})"
            if "noise_flagged" in rep
            else "–"
        )
        taken = f"{rep.get('corrupted_selected', 0)} / {bad}" if bad else "–"
        lines.append(
            f"| {name} | {rep.get('method', '–')} | {rep.get('k', '–')} | "
            f"{'–' if ari is None else f'{ari:.3f}'} | {rep['selected']} | "
            f"{taken} | {rnd} | {flagged} |"
        )
    return "\n".join(lines) + "\n"


# family_damage keys of a PASER selection.json, in column order, and their labels
DAMAGE_SCORES = {
    "jsd": "JSD",
    "loss_increase": "loss increase",
    "generation": "generation check",
}


def damage_table(
    reports: Sequence[tuple[str, Mapping[str, Any]]],
    evals: Sequence[tuple[Mapping[str, np.ndarray], Sequence[str]]],
) -> str:
    """Markdown: how well each degradation score of a select output
    (``family_damage`` in its ``selection.json``) ranks the families by the
    EM the pruning cost them (reference − pruned model, from an evaluate
    output holding both): Spearman's rho over the families, one row per
    (pruned, reference) pair. Empty when no pair was evaluated."""
    from scipy.stats import spearmanr

    rows: dict[tuple[str, str], dict[str, float]] = {}
    for name, rep in reports:
        damage = rep.get("family_damage")
        params = rep.get("params") or {}
        if not damage or not params.get("model") or not params.get("reference"):
            continue
        own = set(parse_variant(name).labels)
        cols = [k for k in DAMAGE_SCORES if any(k in d for d in damage.values())]
        for em, fams in evals:
            pruned = _best_match(em, params["model"], own)
            ref = _best_match(em, params["reference"], own)
            if pruned is None or ref is None:
                continue
            if len(rows.get((pruned, ref), {})) > len(cols):  # has more scores
                continue
            fam = np.asarray(fams)
            names = [f for f in sorted(damage) if (fam == f).any()]
            drop = {
                f: em[ref][fam == f].mean() - em[pruned][fam == f].mean() for f in names
            }
            rho = {}
            for k in cols:
                have = [f for f in names if damage[f].get(k) is not None]
                rho[k] = (
                    spearmanr([damage[f][k] for f in have], [drop[f] for f in have])[0]
                    if len(have) > 2
                    else np.nan
                )
            rows[(pruned, ref)] = {k: float(v) for k, v in rho.items()} | {
                "families": len(names)
            }
    if not rows:
        return ""
    shown = [k for k in DAMAGE_SCORES if any(k in r for r in rows.values())]
    lines = [
        "Spearman's rho between a family's mean damage score and its EM drop "
        "(reference − pruned), over the families:",
        "",
        "| pruned | reference | families | "
        + " | ".join(f"rho({DAMAGE_SCORES[k]}, EM drop)" for k in shown)
        + " |",
        "|---|---|---|" + "---|" * len(shown),
    ]
    for (pruned, ref), r in sorted(rows.items()):
        cell = [f"{r[k]:+.2f}" if np.isfinite(r.get(k, np.nan)) else "–" for k in shown]
        lines.append(
            f"| {pruned} | {ref} | {int(r['families'])} | " + " | ".join(cell) + " |"
        )
    return "\n".join(lines) + "\n"


def _best_match(em: Mapping[str, np.ndarray], stage: str, own: set[str]) -> str | None:
    """The model of ``stage`` whose labels the select's labels include (the
    most specific one), or None."""
    fits = [
        (len(v.labels), m)
        for m in em
        if (v := parse_variant(m)).stage == stage and set(v.labels) <= own
    ]
    return max(fits)[1] if fits else None


def study_sections(
    graph: Any, layout: Any, owned: Any, baseline: str | None = None
) -> list[tuple[str, str]]:
    """(title, Markdown) of the study tables of a run: a sweep table per
    evaluate output when the declaration names ``report.baseline``, and one
    selection table over the select outputs. ``owned(node)`` says whether the
    node's output folder holds this declaration's results; ``baseline``
    overrides the declared one."""
    spec = graph.decl.header.report
    baseline = baseline or spec.baseline
    out: list[tuple[str, str]] = []
    selections = []
    evals: list[tuple[dict[str, np.ndarray], list[str]]] = []
    pooled: Pooled = {}
    for node in graph.nodes.values():
        if not owned(node):
            continue
        folder = layout.out(node.name)
        if node.kind == "evaluate" and (folder / "predictions").is_dir():
            em, fams = read_em(folder)
            evals.append((em, fams))  # the damage table needs no baseline
            text = (
                sweep_table(em, fams, baseline, spec.bootstrap, pooled)
                if baseline
                else ""
            )
            if text:
                out.append((f"Study: {node.name} against {baseline}", text))
        if node.kind == "select" and (folder / "selection.json").exists():
            selections.append(
                (node.name, json.loads((folder / "selection.json").read_text()))
            )
    if sum(len(c) for c in pooled.values()) > len(pooled):  # some method in 2+ cells
        out.append(
            (
                f"Study: pooled over cells against {baseline}",
                pooled_table(pooled, baseline),
            )
        )
    if selections:
        out.append(("Selections", selection_table(selections)))
        damage = damage_table(selections, evals)
        if damage:
            out.append(("Degradation scores against the EM drop", damage))
    return out
