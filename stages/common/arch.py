"""Which causal-LM architectures carp's model stages handle, checked before
any compute.

carp's stages need the Llama layout: decoder blocks at
``model.get_decoder().layers``, each with ``self_attn`` and ``mlp`` built of
``nn.Linear`` projections (separate q/k/v and gate/up, or fused ``qkv_proj``
and ``gate_up_proj`` as in Phi-3). ``TESTED`` are the model types the test
matrix runs through every stage (tests/stages/test_architectures.py); another
model type in the same layout is accepted, one outside it (GPT-2's ``Conv1D``
blocks at ``transformer.h``, for one) is refused with its name and this list.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

TESTED = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "phi3")
LAYOUT = (
    "decoder blocks at model.get_decoder().layers with self_attn and mlp made "
    "of nn.Linear"
)


def layout_problem(model: Any) -> str | None:
    """Why a model (real or on the meta device) is outside the Llama layout;
    None when it is inside."""
    import torch

    decoder = model.get_decoder() if hasattr(model, "get_decoder") else None
    layers = getattr(decoder, "layers", None)
    if not isinstance(layers, torch.nn.ModuleList) or not len(layers):
        return "no decoder blocks at model.get_decoder().layers"
    block = layers[0]
    for part in ("self_attn", "mlp"):
        sub = getattr(block, part, None)
        if sub is None:
            return f"its decoder blocks have no {part}"
        if not any(isinstance(m, torch.nn.Linear) for m in sub.modules()):
            kinds = sorted({type(m).__name__ for m in sub.children()})
            return f"its {part} holds no nn.Linear ({', '.join(kinds)})"
    return None


def architecture_message(name: str, why: str) -> str:
    return (
        f"architecture {name} is not supported: {why}. carp's stages need "
        f"{LAYOUT}; tested: {', '.join(TESTED)}"
    )


def config_problem(path: Path, trust_remote_code: bool = False) -> str | None:
    """The checkpoint folder's architecture, checked on the meta device (no
    weights are read); None when carp's stages can run it."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    try:
        config = AutoConfig.from_pretrained(
            str(path), trust_remote_code=trust_remote_code, local_files_only=True
        )
    except (OSError, ValueError, KeyError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return f"config.json does not load ({first})"
    name = ", ".join(getattr(config, "architectures", None) or []) or str(
        getattr(config, "model_type", "?")
    )
    try:
        with torch.device("meta"):
            model = AutoModelForCausalLM.from_config(
                config, trust_remote_code=trust_remote_code
            )
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return architecture_message(
            name, f"not a causal LM transformers builds ({first})"
        )
    why = layout_problem(model)
    return architecture_message(name, why) if why else None


def check_model(model: Any) -> None:
    """Raise a ValueError naming the model's architecture when it is outside
    the layout (for models that did not come through a ``pretrained`` stage)."""
    why = layout_problem(model)
    if why:
        raise ValueError(architecture_message(type(model).__name__, why))
