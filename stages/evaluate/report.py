"""Evaluation report: markdown table with intervals and paired differences, CSV
for ``dvc plots`` and a PNG bar chart with error bars."""

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


# stages.evaluate.exact_match: problems trained on (reworded) vs never seen
SEEN_ROWS = [
    ("EM seen problems", "em_seen", ".3f"),
    ("EM unseen problems", "em_unseen", ".3f"),
]
# stages.evaluate.multiple_choice
MC_ROWS = [("MC acc", "mc/acc", ".3f"), ("MC acc_norm", "mc/acc_norm", ".3f")]
# metrics over the whole of ppl.txt (stages.evaluate.perplexity)
WHOLE_TEXT_ROWS = [
    ("**perplexity**", "ppl", ".3f"),
    ("word perplexity", "word_perplexity", ".4g"),
    ("byte perplexity", "byte_perplexity", ".4f"),
    ("bits per byte", "bits_per_byte", ".4f"),
]
# stages.evaluate.datasets: the paper protocol and generation quality
PAPER_ROWS = [("**perplexity (paper protocol)**", "ppl_paper", ".3f")]
ROUGE_ROWS = [("ROUGE-L", "rougeL", ".3f")]
# the datasets method labels whole-text rows by protocol
LM_EVAL_PROTOCOL = " (lm-eval protocol)"

ALPHA = 0.05  # McNemar: n.s. at p >= ALPHA (the intervals are 95%)

Results = dict[str, dict[str, float]]
BOUNDS = ("_lo", "_hi")
MAX_DIFF_COLUMNS = 6  # more pairs: the table shows each model against the first


def families_of(results: Results) -> list[str]:
    fams = {
        k[3:]
        for res in results.values()
        for k in res
        if k.startswith("em/") and not k.endswith((*BOUNDS, "_p"))
    }
    return sorted(fams - {"mean"})


def cell(
    res: dict[str, float],
    key: str,
    fmt: str,
    signed: bool = False,
    test: str = "bootstrap",
) -> str:
    """``0.902 [0.87, 0.93]`` (value and its 95% interval, when there is one;
    bounds to 2 decimals, or in the row's own format when it is not ``.3f``);
    a difference (``signed``) whose interval contains 0 gets ``n.s.``; with
    ``test="mcnemar"`` a difference with a McNemar p (``<key>_p``) shows it and
    is n.s. when p >= 0.05."""
    if key not in res:
        return "-"
    sign = "+" if signed else ""
    text = f"{res[key]:{sign}{fmt}}"
    lo, hi = res.get(f"{key}_lo"), res.get(f"{key}_hi")
    if lo is None or hi is None:
        return text
    bound = ".2f" if fmt == ".3f" else fmt
    text += f" [{lo:{sign}{bound}}, {hi:{sign}{bound}}]"
    p = res.get(f"{key}_p") if test == "mcnemar" else None
    if p is not None:
        text += f" p={p:.2g}"
    if signed and (lo <= 0 <= hi if p is None else p >= ALPHA):
        text += " n.s."
    return text


def _rows(results: Results) -> list[tuple[str, str, str]]:
    rows = [(f, f"em/{f}", ".3f") for f in families_of(results)]
    if any("em/mean" in r for r in results.values()):
        rows.append(("**mean EM**", "em/mean", ".3f"))
    for label, key, fmt in SEEN_ROWS:
        if any(key in r for r in results.values()):
            rows.append((label, key, fmt))
    if any("ppl_answer" in r for r in results.values()):
        rows.append(("**answer perplexity**", "ppl_answer", ".3f"))
    paper = any("ppl_paper" in r for r in results.values())
    for label, key, fmt in [*ROUGE_ROWS, *MC_ROWS, *PAPER_ROWS]:
        if any(key in r for r in results.values()):
            rows.append((label, key, fmt))
    for label, key, fmt in WHOLE_TEXT_ROWS:
        if any(key in r for r in results.values()):
            rows.append((label + (LM_EVAL_PROTOCOL if paper else ""), key, fmt))
    unlearn = {k for r in results.values() for k in r if k in UNLEARN_ROWS}
    rows += [(k, k, ".3f") for k in sorted(unlearn, key=UNLEARN_ROWS.index)]
    tasks = {k for r in results.values() for k in r if k.startswith("lm_eval/")}
    rows += [(k, k, ".4g") for k in sorted(tasks) if not k.endswith(BOUNDS)]
    return rows


def _table(
    results: Results,
    columns: list[str],
    rows: list,
    signed: bool = False,
    test: str = "bootstrap",
) -> list[str]:
    lines = ["| | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for label, key, fmt in rows:
        cells = [cell(results[c], key, fmt, signed, test) for c in columns]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def markdown_table(
    results: Results,
    models: list[str],
    diffs: Results | None = None,
    test: str = "bootstrap",
) -> str:
    """Rows: families, mean EM, perplexities (with 95% intervals); columns:
    models in the given order. Then the paired differences (``b - a`` for
    models ``a`` before ``b``), each marked ``n.s.`` when its interval holds 0
    (``test="mcnemar"``: 0/1 rows by McNemar's mid-p >= 0.05 instead)."""
    lines = _table(results, models, _rows(results))
    if diffs:
        shown = [p for p in diffs]
        if len(shown) > MAX_DIFF_COLUMNS:  # wide sweeps: against the first model
            shown = [p for p in shown if p.endswith(f"-vs-{models[0]}")]
        keys = {k for d in diffs.values() for k in d}
        rows = [r for r in _rows(diffs) if r[1] in keys]
        labels = {p: p.replace("-vs-", " − ") for p in shown}
        lines += [
            "",
            "Paired differences (later − earlier model, same records), 95% "
            "paired-bootstrap intervals; *n.s.*: the interval contains 0"
            + (
                " (exact-match and accuracy rows: McNemar mid-p >= 0.05)"
                if test == "mcnemar"
                else ""
            )
            + ("" if len(shown) == len(diffs) else "; all pairs in metrics.json")
            + ".",
            "",
            *_table(
                {labels[p]: diffs[p] for p in shown},
                [labels[p] for p in shown],
                rows,
                signed=True,
                test=test,
            ),
        ]
    lines += [
        "",
        "Intervals: 95%; Wilson per family, family-stratified bootstrap for the "
        "mean EM, record bootstrap for answer perplexity, document bootstrap for "
        "the whole-text rows (word perplexity and bits per byte as lm-eval "
        "defines them)"
        + (
            "; the paper protocol (Wanda/SparseGPT eval_ppl: joined text, "
            "non-overlapping windows) by window bootstrap"
            if any("ppl_paper" in r for r in results.values())
            else ""
        )
        + ".",
    ]
    return "\n".join(lines) + "\n"


def write_csv(results: Results, models: list[str], path: Path) -> None:
    """Long format ``row,model,family,em,em_lo,em_hi`` (families + ``mean``;
    ``row`` = ``family/model``, the bar label of ``dvc plots``)."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["row", "model", "family", "em", "em_lo", "em_hi"])
        for m in models:
            for fam in [*families_of(results), "mean"]:
                key = f"em/{fam}"
                if key in results[m]:
                    vals = [results[m].get(key + b, results[m][key]) for b in BOUNDS]
                    nums = [f"{v:.6f}" for v in [results[m][key], *vals]]
                    w.writerow([f"{fam}/{m}", m, fam, *nums])


def bar_chart(
    results: dict[str, dict[str, float]], models: list[str], path: Path
) -> None:
    """Grouped bars: per-family exact match with 95% intervals, one bar per model."""
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
        los = [results[m].get(f"em/{f}_lo", y) for f, y in zip(fams, ys, strict=True)]
        his = [results[m].get(f"em/{f}_hi", y) for f, y in zip(fams, ys, strict=True)]
        err = [
            [max(y - lo, 0.0) for y, lo in zip(ys, los, strict=True)],
            [max(hi - y, 0.0) for y, hi in zip(ys, his, strict=True)],
        ]
        xs = [j + (i - (len(models) - 1) / 2) * width for j in range(len(fams))]
        ax.bar(xs, ys, width, label=m, yerr=err, capsize=2, ecolor="0.3")
    ax.set_xticks(range(len(fams)), fams, rotation=30, ha="right")
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("exact match")
    ax.legend(fontsize="small")
    fig.tight_layout()
    fig.savefig(path, dpi=100, metadata={"Software": None})
    plt.close(fig)
