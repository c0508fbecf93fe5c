"""Which modules a prune method touches, and what a method hands back to the stage."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Pruned:
    """A method's result: bit-packed keep-masks by module name (mask methods,
    ``maskio.PackedMask``) or a note
    that the model's shapes changed (structured methods), plus extra metrics and
    manifest entries."""

    masks: dict[str, Any] = field(default_factory=dict)
    structured: bool = False
    metrics: dict[str, float] = field(default_factory=dict)
    manifest: dict[str, Any] = field(default_factory=dict)


def decoder_layers(model: Any) -> Any:
    """The ``nn.ModuleList`` of decoder blocks of an HF causal LM."""
    from stages.common.arch import check_model

    check_model(model)
    return model.get_decoder().layers


def matches(name: str, include: list[str], exclude: list[str]) -> bool:
    """fnmatch ``name`` against include (any) and exclude (none) patterns."""
    inc = any(fnmatch.fnmatchcase(name, p) for p in include)
    return inc and not any(fnmatch.fnmatchcase(name, p) for p in exclude)


def select_linears(
    model: Any, include: list[str], exclude: list[str]
) -> dict[str, Any]:
    """Linear modules selected by the include/exclude patterns, by module name."""
    import torch

    out = {
        name: mod
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and matches(name, include, exclude)
    }
    canonical = {id(p): n for n, p in model.named_parameters()}
    for name, mod in out.items():
        if canonical.get(id(mod.weight)) != f"{name}.weight":
            raise ValueError(
                f"exclude: {name}.weight is tied to {canonical.get(id(mod.weight))} "
                "(tie_word_embeddings); pruning it would prune that too, so add "
                f"'{name}' to `exclude`"
            )
    if not out:
        raise ValueError(
            f"include {include} / exclude {exclude} select no linear layer; "
            "widen `include` (module names look like 'model.layers.0.mlp.up_proj')"
        )
    return out


def linears_by_block(
    model: Any, include: list[str], exclude: list[str], method: str
) -> list[dict[str, Any]]:
    """Selected linears grouped per decoder block (index = block number), for
    methods that prune one block at a time; refuses modules outside blocks."""
    layers = decoder_layers(model)
    owner = {id(m): i for i, blk in enumerate(layers) for m in blk.modules()}
    groups: list[dict[str, Any]] = [{} for _ in layers]
    outside = []
    for name, mod in select_linears(model, include, exclude).items():
        if id(mod) in owner:
            groups[owner[id(mod)]][name] = mod
        else:
            outside.append(name)
    if outside:
        raise ValueError(
            f"exclude: {method} prunes linear layers inside decoder blocks only, but "
            f"{outside} were selected; add them to `exclude` or use magnitude"
        )
    return groups


def mask_key(module_name: str) -> str:
    """Parameter name a keep-mask is stored under (``<module>.weight``)."""
    return f"{module_name}.weight"
