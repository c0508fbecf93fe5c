"""What a method's ``merge_tensor`` receives for one tensor name."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TensorJob:
    """One tensor of every input, already float32 (same shape each).

    ``tensors`` follow the resolved ``models`` order; ``base`` is the base
    model's tensor for task-vector methods (else None); ``weights`` and
    ``densities`` are per model, in the same order; ``seed`` seeds the random
    drop of this tensor (DARE), derived from the stage seed and the name."""

    name: str
    tensors: list[Any]
    base: Any = None
    weights: list[float] | None = None
    densities: list[float] | None = None
    seed: int = 0
