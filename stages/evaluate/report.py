"""Evaluation report: markdown table, CSV for ``dvc plots`` and a PNG bar chart."""

from __future__ import annotations

import csv
from pathlib import Path

# the unlearning suite's rows, in MUSE's order (stages.evaluate.unlearning)
UNLEARN_ROWS = [
    "unlearn/verbmem_forget",
    "unlearn/knowmem_forget",
    "unlearn/knowmem_retain",
    "unlearn/em_forget",
    "unlearn/em_retain",
    "unlearn/nll_forget",
    "unlearn/nll_holdout",
    "unlearn/mink_auc",
    "unlearn/minkpp_auc",
    "unlearn/privleak_mink",
    "unlearn/privleak_minkpp",
]


def families_of(results: dict[str, dict[str, float]]) -> list[str]:
    fams = {k[3:] for res in results.values() for k in res if k.startswith("em/")}
    return sorted(fams - {"mean"})


def markdown_table(results: dict[str, dict[str, float]], models: list[str]) -> str:
    """Rows: families, mean EM, perplexity; columns: models in the given order."""
    rows: list[tuple[str, str, str]] = [
        (f, f"em/{f}", "{:.3f}") for f in families_of(results)
    ]
    if any("em/mean" in r for r in results.values()):
        rows.append(("**mean EM**", "em/mean", "{:.3f}"))
    if any("ppl" in r for r in results.values()):
        rows.append(("**perplexity**", "ppl", "{:.2f}"))
    unlearn = sorted({k for r in results.values() for k in r if k in UNLEARN_ROWS})
    rows += [(k, k, "{:.3f}") for k in sorted(unlearn, key=UNLEARN_ROWS.index)]
    lines = ["| | " + " | ".join(models) + " |", "|---" * (len(models) + 1) + "|"]
    for label, key, fmt in rows:
        cells = [
            fmt.format(results[m][key]) if key in results[m] else "-" for m in models
        ]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(
    results: dict[str, dict[str, float]], models: list[str], path: Path
) -> None:
    """Long format ``model,family,em`` (families + ``mean``) for ``dvc plots``."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["model", "family", "em"])
        for m in models:
            for fam in [*families_of(results), "mean"]:
                if f"em/{fam}" in results[m]:
                    w.writerow([m, fam, f"{results[m][f'em/{fam}']:.6f}"])


def bar_chart(
    results: dict[str, dict[str, float]], models: list[str], path: Path
) -> None:
    """Grouped bars: per-family exact match, one bar per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fams = [*families_of(results), "mean"]
    width = 0.8 / max(len(models), 1)
    fig, ax = plt.subplots(
        figsize=(max(6, 0.9 * len(fams) * max(1, len(models) / 2)), 4)
    )
    for i, m in enumerate(models):
        ys = [results[m].get(f"em/{f}", 0.0) for f in fams]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(fams))]
        ax.bar(xs, ys, width, label=m)
    ax.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
