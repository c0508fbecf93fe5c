"""Sparsity summaries shared by the stages that write sparse models (prune,
merge): pure arithmetic over per-tensor (zeros, total) counts."""

from __future__ import annotations

import re

_BLOCK = re.compile(r"\.layers\.(\d+)\.")


def sparsity_summary(
    zeros: dict[str, tuple[int, int]],
) -> tuple[dict[str, float], dict[str, float]]:
    """Zero fraction global and per decoder block (flat metrics:
    ``sparsity``, ``sparsity.layer_<i>``) and per tensor (for the manifest),
    from ``name -> (zeros, total)``."""
    blocks: dict[int, list[int]] = {}
    z_all = n_all = 0
    for name, (z, n) in zeros.items():
        z_all, n_all = z_all + z, n_all + n
        m = _BLOCK.search(name)
        if m:
            acc = blocks.setdefault(int(m.group(1)), [0, 0])
            acc[0] += z
            acc[1] += n
    metrics = {"sparsity": z_all / n_all if n_all else 0.0}
    metrics.update(
        {f"sparsity.layer_{i}": z / n for i, (z, n) in sorted(blocks.items())}
    )
    per_module = {k: z / n for k, (z, n) in sorted(zeros.items())}
    return metrics, per_module
