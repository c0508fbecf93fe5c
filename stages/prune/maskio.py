"""Keep-masks held bit-packed (1/8 of a bool tensor) while a model is pruned,
and streamed to ``masks.safetensors`` one tensor at a time, so a 7B model's
masks never sit in memory as bytes (let alone twice, as ``save_file`` would)."""

from __future__ import annotations

import json
import struct
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
    header: dict[str, Any] = {}
    offset = 0
    names = sorted(masks)
    for name in names:
        n = 1
        for d in masks[name].shape:
            n *= d
        header[name] = {
            "dtype": "BOOL",
            "shape": list(masks[name].shape),
            "data_offsets": [offset, offset + n],
        }
        offset += n
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data start to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            f.write(masks[name].unpack().numpy().tobytes())
