"""Sparsity patterns: ``unstructured`` or N:M (keep N of every M weights).

Pure Python, so validating a declaration never imports torch.
"""

from __future__ import annotations

# One wording of the convention for errors, field help and `carp methods`.
NM_CONVENTION = (
    "N:M keeps N of every M consecutive weights along the input dimension "
    "(NVIDIA's convention: '2:4' keeps 2 of 4, sparsity 1 - N/M); the Wanda and "
    "SparseGPT reference code's `prune_n` counts the pruned ones instead, so its "
    "prune_n=1, prune_m=4 is carp's '3:4'"
)


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``"unstructured"`` -> None, ``"2:4"`` -> (2, 4); raises on anything else."""
    if pattern == "unstructured":
        return None
    parts = pattern.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise ValueError(
            f"pattern '{pattern}' is neither 'unstructured' nor N:M like '2:4'"
        )
    n, m = (int(p) for p in parts)
    if not 1 <= n < m:
        raise ValueError(
            f"pattern '{pattern}': N:M needs 1 <= N < M. {NM_CONVENTION}; "
            "e.g. '2:4' or '4:8'"
        )
    return n, m
