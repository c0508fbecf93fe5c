"""Tables of a selection study run by carp (pipelines/presets/selection-study.yaml
or selection-slice.yaml): for every recovered method and budget, the mean
exact-match difference against the baseline (random) recovered at the same
budget and seed, overall and per family, with 95% intervals from a bootstrap
over training seeds and eval records (stages/select/study.py); the clusters'
ARI against the families; and, for the noisy-pool selections, the corrupted
records each selection took against random's 95% hypergeometric range.

Reads only the checkout's artifacts (per-record predictions of each evaluate
stage, selection.json of each select stage); run it after ``carp run``:

    .venv/bin/python benchmarks/select_study.py [--artifacts artifacts] \
        [--baseline rec_random]

Writes benchmarks/results/select_study.md (``--out``) and prints it.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_predictions(eval_dir: Path) -> tuple[dict[str, Any], list[str], list[str]]:
    """0/1 EM arrays per model (same record order), the records' families and
    ids, from ``<eval>/predictions/<model>.jsonl``."""
    import numpy as np

    out: dict[str, Any] = {}
    ids: list[str] = []
    fams: list[str] = []
    for f in sorted((eval_dir / "predictions").glob("*.jsonl")):
        rows = [json.loads(line) for line in f.read_text().splitlines() if line]
        rows.sort(key=lambda r: r["id"])
        if not ids:
            ids = [r["id"] for r in rows]
            fams = [r["family"] for r in rows]
        if [r["id"] for r in rows] != ids:
            raise ValueError(f"{f}: scored on other records than the first model")
        out[f.stem] = np.array([float(r["em"]) for r in rows])
    return out, fams, ids


def em_tables(eval_dir: Path, baseline: str, n_boot: int) -> list[str]:
    """Markdown: overall and per-family paired differences against baseline."""
    import numpy as np

    from stages.select.study import paired_difference, parse_variant

    em, fams, _ = read_predictions(eval_dir)
    fam_names = sorted(set(fams))
    groups: dict[tuple[str, float], dict[int, Any]] = defaultdict(dict)
    for name, arr in em.items():
        v = parse_variant(name)
        if v.budget is not None and v.seed is not None:
            groups[(v.method, v.budget)][v.seed] = arr
    fam_arr = np.asarray(fams)

    def mean_em(a: Any) -> float:
        return float(np.mean([a[fam_arr == f].mean() for f in fam_names]))

    lines = [
        f"### {eval_dir.name}: mean EM (mean of family means) and paired "
        f"difference against `{baseline}` (same budget and seed; 95% bootstrap "
        "over seeds and records)",
        "",
        "| method | budget | seeds | mean EM | − baseline [95% CI] |",
        "|---|---|---|---|---|",
    ]
    for name in ("base", "prune"):
        if name in em:
            lines.append(f"| {name} | – | – | {mean_em(em[name]):.3f} | – |")
    per_family: list[str] = []
    for (method, budget), runs in sorted(groups.items(), key=lambda kv: kv[0][::-1]):
        ems = [mean_em(a) for a in runs.values()]
        cell = "–"
        if method != baseline and (baseline, budget) in groups:
            d = paired_difference(runs, groups[(baseline, budget)], fams, n_boot)
            lo, hi = d["mean"][1], d["mean"][2]
            mark = "" if lo > 0 or hi < 0 else " n.s."
            cell = f"{d['mean'][0]:+.3f} [{lo:+.3f}, {hi:+.3f}]{mark}"
            per_family.append(
                f"| {method} | {budget:g} | "
                + " | ".join(
                    f"{d[f][0]:+.2f} [{d[f][1]:+.2f}, {d[f][2]:+.2f}]"
                    for f in fam_names
                )
                + " |"
            )
        lines.append(
            f"| {method} | {budget:g} | {len(runs)} | "
            f"{np.mean(ems):.3f} ± {np.std(ems, ddof=1) if len(ems) > 1 else 0:.3f}"
            f" | {cell} |"
        )
    if per_family:
        lines += [
            "",
            f"Per family, difference against `{baseline}` [95% CI]:",
            "",
            "| method | budget | " + " | ".join(fam_names) + " |",
            "|---|---|" + "---|" * len(fam_names),
            *per_family,
        ]
    return lines


def selection_tables(artifacts: Path) -> list[str]:
    """Markdown: ARI and corrupted records of every select output."""
    from stages.select.study import random_corrupted_range

    rows = []
    for f in sorted(artifacts.glob("*/selection.json")):
        rep = json.loads(f.read_text())
        rows.append((f.parent.name, rep))
    lines = [
        "### Selections: clusters vs families, corrupted records taken",
        "",
        "| select node | K | ARI vs families | selected | corrupted selected | "
        "random: expected [95% range] | flagged (of them corrupted) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, rep in rows:
        ari = rep.get("ari_vs_family")
        bad_pool = rep.get("corrupted_in_pool", 0)
        rnd = "–"
        if bad_pool:
            m, lo, hi = random_corrupted_range(
                rep["pool_size"], bad_pool, rep["selected"]
            )
            rnd = f"{m:.1f} [{lo}, {hi}]"
        flagged = (
            f"{rep['noise_flagged']} ({rep['noise_flagged_corrupted']})"
            if "noise_flagged" in rep
            else "–"
        )
        lines.append(
            f"| {name} | {rep.get('k', '–')} | "
            f"{'–' if ari is None else f'{ari:.3f}'} | {rep['selected']} | "
            f"{rep.get('corrupted_selected', 0)} / {bad_pool} | {rnd} | {flagged} |"
        )
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--artifacts", type=Path, default=ROOT / "artifacts")
    ap.add_argument("--baseline", default="rec_random")
    ap.add_argument("--boot", type=int, default=2000)
    ap.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "select_study.md"
    )
    a = ap.parse_args()
    lines = [f"# Selection study ({a.artifacts})", ""]
    for ev in sorted(a.artifacts.glob("*/predictions")):
        lines += em_tables(ev.parent, a.baseline, a.boot) + [""]
    lines += selection_tables(a.artifacts)
    text = "\n".join(lines) + "\n"
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
