"""Sparsity patterns: ``unstructured`` or N:M (keep N of every M weights).

Pure Python, so validating a declaration never imports torch.
"""

from __future__ import annotations


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
    if not 0 < n < m:
        raise ValueError(
            f"pattern '{pattern}': N:M needs 0 < N < M (keep N of every M weights), "
            "e.g. '2:4' or '4:8'"
        )
    return n, m
