"""Selection plots: the pool's 2-D diffusion map coloured by cluster, and CDS
with allocated/taken budget per cluster (PNG for MLflow, CSV for dvc plots)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np


def cluster_table(
    out_dir: Path,
    sizes: Sequence[int],
    cds: Sequence[float],
    allocated: Sequence[int],
    taken: Sequence[int],
    rejected: Sequence[int],
) -> str:
    """Write ``clusters.csv`` (one row per cluster) and return its name."""
    rows = ["cluster,size,cds,allocated,taken,rejected"]
    for c, row in enumerate(zip(sizes, cds, allocated, taken, rejected, strict=True)):
        s, d, a, t, r = row
        rows.append(f"{c},{s},{d:.6g},{a},{t},{r}")
    (out_dir / "clusters.csv").write_text("\n".join(rows) + "\n")
    return "clusters.csv"


def map_plot(
    out_dir: Path,
    coords: np.ndarray,
    labels: np.ndarray,
    selected: Sequence[int],
    max_points: int = 20000,
    seed: int = 0,
) -> str:
    """Scatter of the first two diffusion coordinates, coloured by cluster,
    selected records outlined; at most ``max_points`` drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = len(labels)
    keep = np.arange(n)
    if n > max_points:
        keep = np.sort(np.random.default_rng(seed).choice(n, max_points, replace=False))
    xy = coords[:, :2] if coords.shape[1] >= 2 else np.c_[coords[:, :1], np.zeros(n)]
    sel = np.zeros(n, dtype=bool)
    sel[list(selected)] = True
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ax.scatter(*xy[keep].T, c=labels[keep], cmap="tab20", s=4, alpha=0.6, lw=0)
    ks = keep[sel[keep]]
    ax.scatter(*xy[ks].T, facecolors="none", edgecolors="k", s=10, lw=0.4)
    ax.set(xlabel="diffusion coordinate 1", ylabel="diffusion coordinate 2")
    ax.set_title(f"pool by cluster (K={labels.max() + 1}); circles: selected")
    fig.tight_layout()
    fig.savefig(out_dir / "cluster_map.png", dpi=110)
    plt.close(fig)
    return "cluster_map.png"


def budget_plot(
    out_dir: Path,
    cds: Sequence[float],
    allocated: Sequence[int],
    taken: Sequence[int],
    sizes: Sequence[int],
) -> str:
    """Bars of CDS per cluster and of size / allocated / taken per cluster."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = np.arange(len(cds))
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    a1.bar(k, cds, color="tab:red")
    a1.set_ylabel("CDS (mean JSD)")
    w = 0.28
    a2.bar(k - w, sizes, w, label="cluster size", color="0.7")
    a2.bar(k, allocated, w, label="allocated", color="tab:blue")
    a2.bar(k + w, taken, w, label="taken", color="tab:green")
    a2.set(xlabel="cluster", ylabel="records", yscale="log")
    a2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_dir / "cluster_budget.png", dpi=110)
    plt.close(fig)
    return "cluster_budget.png"
