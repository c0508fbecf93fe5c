"""Write a pruned model as an HF checkpoint, streaming ``model.safetensors``
one tensor at a time (safetensors format: 8-byte little-endian header length,
a JSON header of dtype/shape/data_offsets per tensor, then the raw bytes).

``save_pretrained`` would do the same work but first imports DeepSpeed (via
accelerate's ``unwrap_model``), about 130 MiB of resident memory that a
pruning process has no use for. The file written here loads with
``from_pretrained`` and ``safetensors.safe_open`` like any other.
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


def write_safetensors(
    path: Path,
    specs: dict[str, tuple[str, tuple[int, ...], int]],
    data: Callable[[str], Any],
    metadata: dict[str, str] | None = None,
) -> None:
    """Write a safetensors file whose tensors are produced one at a time.

    ``specs`` maps name -> (safetensors dtype code, shape, byte length);
    ``data(name)`` returns that tensor's bytes (any buffer) when it is written,
    so at most one tensor's bytes exist at once beyond what the caller holds.
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
            f.write(buf)


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


def checkpoint_state(model: Any) -> dict[str, Any]:
    """The tensors ``save_pretrained`` would write: the state dict without
    ignored keys and tied aliases, in the checkpoint's (unconverted) names."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = model.state_dict()
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    return revert_weight_conversion(model, state)


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """``config.json``, ``generation_config.json``, a streamed
    ``model.safetensors`` and the tokenizer, as ``save_pretrained`` lays them out."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.dtype = str(model.dtype).removeprefix("torch.")
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out_dir))
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out_dir))
    state = checkpoint_state(model)
    specs = {k: tensor_spec(v) for k, v in state.items()}
    write_safetensors(
        out_dir / WEIGHTS_FILE,
        specs,
        lambda k: tensor_bytes(state[k]),
        metadata={"format": "pt"},
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
