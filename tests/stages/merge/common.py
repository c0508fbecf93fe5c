"""Merge test inputs: a base Llama (``tests.tiny``) and experts = base + small
seeded deltas, written with the streaming checkpoint writer the stages use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.prune.checkpoint import save_checkpoint
from tests.tiny import char_tokenizer, tiny_llama


def expert(base: Any, seed: int, scale: float = 0.02) -> Any:
    """A copy of ``base`` with N(0, scale) added to every parameter."""
    import copy

    import torch

    m = copy.deepcopy(base)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in m.parameters():
            p.add_(torch.randn(p.shape, generator=g) * scale)
    return m


def write_checkpoint(model: Any, tok: Any, folder: Path) -> Path:
    """Config, streamed model.safetensors and tokenizer (no DeepSpeed import,
    unlike ``save_pretrained``)."""
    save_checkpoint(model, tok, folder)
    return folder


def build_family(root: Path, n_experts: int = 3, **dims: Any) -> dict[str, Path]:
    """Folders ``base``, ``e0`` ... under ``root`` (hidden 32, 2 layers)."""
    tok = char_tokenizer()
    dims = {"hidden": 32, "layers": 2, **dims}
    base = tiny_llama(tok, seed=0, **dims)
    out = {"base": write_checkpoint(base, tok, root / "base")}
    for i in range(n_experts):
        out[f"e{i}"] = write_checkpoint(expert(base, 10 + i), tok, root / f"e{i}")
    return out


def merge(method: str, inputs: dict[str, Any], out: Path, **kw: Any) -> Any:
    """Run the merge kind's ``run`` as the engine does; returns the StageResult."""
    from stages.merge import METHODS, run

    models = [Path(p).name for p in inputs["models"]]
    values = {"models": models, **kw}
    if "base" in inputs:
        values["base"] = Path(inputs["base"]).name
    params = METHODS.load(method).Params.model_validate(values)
    out.mkdir(parents=True, exist_ok=True)
    return run(params, inputs, out, RunContext(seed=0, name="merge"))
