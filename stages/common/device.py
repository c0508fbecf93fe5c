"""Device and dtype of a model-running stage: ``device: auto | cpu | cuda |
cuda:N`` (``auto``: CUDA when present, else CPU) and ``dtype: auto | float32 |
bfloat16 | float16`` (``auto``: the checkpoint's own ``torch_dtype``, float32
when it names none or on CPU for half types, which CPUs run slowly).

``check_device`` is the params validator: it checks the spelling at
``carp validate`` time. ``require_device`` runs when a stage starts, before any
compute: a declared ``cuda`` on a machine without one is refused there with the
stage's name and the fix, never a CUDA error half-way through.
"""

from __future__ import annotations

import re
from typing import Any

DEVICE_PATTERN = re.compile(r"^(auto|cpu|cuda|cuda:\d+)$")
DTYPES = ("auto", "float32", "bfloat16", "float16")
DEVICE_DESCRIPTION = (
    "Torch device: `auto` (cuda when present, else cpu), `cpu`, `cuda` or `cuda:N`."
)
DTYPE_DESCRIPTION = (
    "Weights dtype: `auto` (the checkpoint's torch_dtype; float32 on cpu for "
    "half types or when it names none), `float32`, `bfloat16` or `float16`."
)


def check_device(value: str) -> str:
    """The spelling of a device field (no hardware is probed here)."""
    if not isinstance(value, str) or not DEVICE_PATTERN.match(value):
        raise ValueError(
            f"device: '{value}' is not a device; use auto, cpu, cuda or cuda:N"
        )
    return value


def pick_device(device: str) -> str:
    """``auto`` -> ``cuda`` when available, else ``cpu``; others unchanged."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def cuda_problem(device: str) -> str | None:
    """Why ``device`` cannot run on this machine (a CUDA device or index it
    lacks), with the fix; None when it can."""
    if check_device(device) in ("auto", "cpu"):
        return None  # auto falls back to cpu: nothing to refuse (and no torch)
    import torch

    dev = device
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(dev.split(":", 1)[1]) if ":" in dev else 0
    if index < n:
        return None
    have = f"{n} CUDA device(s)" if n else "no CUDA device"
    return (
        f"'{device}' asked for, but this machine has {have}; set device: auto "
        "(cuda when present, else cpu) or cpu"
    )


def device_issues(device: str) -> list[tuple[str, str]]:
    """``local_issues`` of a params model with a ``device`` field: checked by
    the CLI before anything runs."""
    msg = cuda_problem(device)
    return [("device", msg)] if msg else []


def require_device(device: str, stage: str = "this stage") -> str:
    """The device a stage runs on, or a ValueError naming ``stage`` and the fix
    when it asks for CUDA (or a CUDA index) this machine does not have."""
    msg = cuda_problem(device)
    if msg:
        field = ".".join(("stages", stage, "device"))  # not an import
        raise ValueError(f"{field}: {msg}")
    return pick_device(device)


def pick_dtype(dtype: str, config: Any, device: str) -> Any:
    """The torch dtype to load a model in: ``auto`` reads the checkpoint's
    ``torch_dtype`` (float32 on cpu for half types)."""
    import torch

    if dtype != "auto":
        return getattr(torch, dtype)
    named = getattr(config, "dtype", None)  # transformers 5: torch_dtype's name
    if isinstance(named, str):
        named = getattr(torch, named, None)
    if not isinstance(named, torch.dtype):
        return torch.float32
    if device == "cpu" and named in (torch.float16, torch.bfloat16):
        return torch.float32
    return named


def load_on(path: Any, device: str, dtype: str) -> Any:
    """A causal LM from a local folder on ``device`` in ``dtype``, eval mode."""
    from pathlib import Path

    from transformers import AutoConfig

    from stages.common.io import load_model, trusts_remote_code

    path = Path(path)
    config = AutoConfig.from_pretrained(
        path, trust_remote_code=trusts_remote_code(path), local_files_only=True
    )
    model = load_model(path, dtype=pick_dtype(dtype, config, device))
    return model.to(device).eval()


def model_device(model: Any) -> Any:
    """Where a model's inputs go: its first parameter's device (cpu for a
    stand-in without parameters)."""
    params = getattr(model, "parameters", None)
    first = next(iter(params()), None) if callable(params) else None
    return first.device if first is not None else "cpu"
