"""Streamed safetensors files: written one tensor at a time (safetensors format:
8-byte little-endian header length, a JSON header of dtype/shape/data_offsets per
tensor, then the raw bytes), so no stage holds a whole state dict's bytes to save
it. Shared by the prune stage (pruned checkpoints, masks) and the merge stage.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

WEIGHTS_FILE = "model.safetensors"
_DTYPES = {  # torch dtype name -> safetensors dtype code
    "float64": "F64",
    "float32": "F32",
    "float16": "F16",
    "bfloat16": "BF16",
    "int64": "I64",
    "int32": "I32",
    "int16": "I16",
    "int8": "I8",
    "uint8": "U8",
    "bool": "BOOL",
    "float8_e4m3fn": "F8_E4M3",
    "float8_e5m2": "F8_E5M2",
}


CHUNK_BYTES = 32 * 2**20  # bytes written per write() call


def write_safetensors(
    path: Path,
    specs: dict[str, tuple[str, tuple[int, ...], int]],
    data: Callable[[str], Any],
    metadata: dict[str, str] | None = None,
    written: Callable[[str, int, int], None] | None = None,
) -> None:
    """Write a safetensors file whose tensors are produced one at a time.

    ``specs`` maps name -> (safetensors dtype code, shape, byte length);
    ``data(name)`` returns that tensor's bytes (any buffer) when it is written,
    so at most one tensor's bytes exist at once beyond what the caller holds.
    Bytes go out in chunks of ``CHUNK_BYTES``; ``written(name, start, stop)``
    is called after each with its byte range in the tensor (the prune stage
    releases a mapped tensor's pages chunk by chunk, so a large embedding is
    never resident whole).
    """
    header: dict[str, Any] = {"__metadata__": metadata} if metadata else {}
    offset = 0
    names = sorted(specs)
    for name in names:
        dtype, shape, nbytes = specs[name]
        header[name] = {
            "dtype": dtype,
            "shape": list(shape),
            "data_offsets": [offset, offset + nbytes],
        }
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)  # the format aligns the data start to 8 bytes
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            buf = memoryview(data(name)).cast("B")
            if buf.nbytes != specs[name][2]:
                raise ValueError(
                    f"{name}: produced {buf.nbytes} bytes, header says {specs[name][2]}"
                )
            for start in range(0, buf.nbytes, CHUNK_BYTES):
                stop = min(start + CHUNK_BYTES, buf.nbytes)
                f.write(buf[start:stop])
                if written is not None:
                    written(name, start, stop)


def tensor_spec(t: Any) -> tuple[str, tuple[int, ...], int]:
    """(safetensors dtype code, shape, byte length) of a torch tensor."""
    name = str(t.dtype).removeprefix("torch.")
    if name not in _DTYPES:
        raise ValueError(f"dtype: safetensors cannot store {t.dtype}")
    return _DTYPES[name], tuple(t.shape), t.numel() * t.element_size()


def tensor_bytes(t: Any) -> Any:
    """The raw bytes of a CPU tensor as a uint8 numpy view (a copy only when the
    tensor is not contiguous or not on the CPU)."""
    import torch

    t = t.detach().to("cpu").contiguous()
    return t.reshape(-1).view(torch.uint8).numpy() if t.numel() else b""
