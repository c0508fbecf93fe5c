"""Across seeds: mean ± std of each headline metric over the seed variants of a
swept stage, with the 95% t-interval of the mean (pure functions).

A stage declared with ``seeds: [0, 1, 2]`` runs as ``<stage>@s0``, ... (or
``<stage>@<matrix label>-s0``, ...: the seed label always comes last). Models
whose names differ only in that label form one group; a group of two or more
gets a row. The interval is Student's t over the seed means, so it measures
run-to-run variation (training seed, data order), which the per-record intervals
of one run do not.
"""

from __future__ import annotations

import math
import re
from statistics import mean, stdev

from stages.evaluate.report import Results

SEED_LABEL = re.compile(r"^(?P<group>.+?)[-@]s(?P<seed>\d+)$")
SUMMARY_KEYS = [
    ("mean EM", "em/mean", ".3f"),
    ("EM seen", "em_seen", ".3f"),
    ("EM unseen", "em_unseen", ".3f"),
    ("MC acc", "mc/acc", ".3f"),
    ("answer ppl", "ppl_answer", ".3f"),
    ("ppl", "ppl", ".3f"),
    ("bits/byte", "bits_per_byte", ".4f"),
]


def seed_groups(models: list[str]) -> dict[str, list[str]]:
    """Group name -> its seed variants (in order), for groups of two or more."""
    groups: dict[str, list[str]] = {}
    for m in models:
        hit = SEED_LABEL.match(m)
        if hit:
            groups.setdefault(hit["group"], []).append(m)
    return {g: ms for g, ms in groups.items() if len(ms) >= 2}


def t_interval(values: list[float], confidence: float = 0.95) -> tuple[float, float]:
    """Student-t interval of the mean of ``values`` (n >= 2)."""
    from scipy.stats import t

    m, n = mean(values), len(values)
    half = t.ppf(0.5 + confidence / 2, n - 1) * stdev(values) / math.sqrt(n)
    return m - half, m + half


def seed_summary(results: Results, models: list[str]) -> dict[str, dict[str, float]]:
    """Group -> ``<metric>`` (mean), ``<metric>_std``, ``<metric>_lo``/``_hi``
    (t-interval of the mean) and ``seeds`` (how many), over its seed variants."""
    out: dict[str, dict[str, float]] = {}
    for group, members in seed_groups(models).items():
        row: dict[str, float] = {"seeds": float(len(members))}
        for _, key, _ in SUMMARY_KEYS:
            vals = [results[m][key] for m in members if key in results[m]]
            if len(vals) == len(members):
                row[key], row[f"{key}_std"] = mean(vals), stdev(vals)
                row[f"{key}_lo"], row[f"{key}_hi"] = t_interval(vals)
        out[group] = row
    return out


def seed_table(summary: dict[str, dict[str, float]]) -> str:
    """Markdown: one row per group, ``mean ± std [lo, hi]`` per metric."""
    keys = [k for k in SUMMARY_KEYS if any(k[1] in r for r in summary.values())]
    if not summary or not keys:
        return ""
    lines = [
        "Across seeds: mean ± std over the seed variants, 95% t-interval of the mean.",
        "",
        "| | seeds | " + " | ".join(label for label, _, _ in keys) + " |",
        "|---" * (len(keys) + 2) + "|",
    ]
    for group, row in summary.items():
        cells = [
            f"{row[k]:{fmt}} ± {row[k + '_std']:{fmt}} "
            f"[{row[k + '_lo']:{fmt}}, {row[k + '_hi']:{fmt}}]"
            if k in row
            else "-"
            for _, k, fmt in keys
        ]
        lines.append(f"| {group} | {int(row['seeds'])} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
