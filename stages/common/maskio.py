"""Keep-masks held bit-packed (1/8 of a bool tensor) while a model is pruned,
and streamed to ``masks.safetensors`` one tensor at a time, so a 7B model's
masks never sit in memory as bytes (let alone twice, as ``save_file`` would)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class PackedMask:
    """A bool mask as ``numpy.packbits`` of its flattened values."""

    bits: Any
    shape: tuple[int, ...]

    def unpack(self) -> Any:
        import numpy as np
        import torch

        n = 1
        for d in self.shape:
            n *= d
        flat = np.unpackbits(self.bits, count=n).astype(bool)
        return torch.from_numpy(flat).view(self.shape)


def pack(keep: Any) -> PackedMask:
    """Bit-pack a bool tensor (any device)."""
    import numpy as np
    import torch

    flat = keep.detach().reshape(-1).to("cpu", dtype=torch.bool)
    return PackedMask(np.packbits(flat.numpy()), tuple(keep.shape))


def write_masks(masks: dict[str, PackedMask], path: Path) -> None:
    """Write a standard safetensors file of BOOL tensors (readable by
    ``safetensors.torch.load_file``), unpacking one mask at a time."""
    from stages.common.stream import write_safetensors

    specs = {}
    for name, m in masks.items():
        n = 1
        for d in m.shape:
            n *= d
        specs[name] = ("BOOL", m.shape, n)
    write_safetensors(path, specs, lambda k: masks[k].unpack().numpy())
