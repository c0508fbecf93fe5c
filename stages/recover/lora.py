"""LoRA recovery via PEFT (Hu et al., 2022), merged back under the pruning mask.

A dense update ``B @ A`` merged into sparse weights fills every pruned zero.
Here the merge is ``W + (s · B @ A) ⊙ M`` with ``M`` the keep-mask, and with
``masked_forward`` the same masked update is what the model trains with, so
the merged model computes exactly what was trained (as in SPP / SQFT).
"""

from __future__ import annotations

import types
from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from stages.recover import Params as RecoverParams

PEFT_PREFIX = "base_model.model."
ALL_LINEAR = "all-linear"  # peft: every linear of the decoder blocks, not lm_head


class Params(RecoverParams):
    method: Literal["lora"] = Field("lora", description="LoRA adapters.")
    lr: float = Field(1e-3, gt=0, description="Peak learning rate (AdamW).")
    rank: int = Field(16, ge=1, description="LoRA rank r.")
    alpha: float = Field(
        32.0, gt=0, description="LoRA alpha; the update is scaled by alpha / rank."
    )
    dropout: float = Field(
        0.05, ge=0, lt=1, description="Dropout on the LoRA input path."
    )
    target_modules: list[str] | Literal["all-linear"] = Field(
        ALL_LINEAR,
        description="Module names (suffixes) that get adapters, or `all-linear` "
        "(peft's: every linear layer of the decoder blocks, fused ones such as "
        "Phi-3's qkv_proj included; never lm_head).",
    )
    masked_forward: bool = Field(
        True,
        description="On sparse inputs train with the masked update "
        "(B@A)⊙M, so training and the merged model agree.",
    )
    save_adapter: bool = Field(
        False,
        description="Also write the PEFT adapter to `adapter/` (the merged "
        "model is always written).",
    )


def _masked_lora_forward(self: Any, x: Any, *args: Any, **kwargs: Any) -> Any:
    """base(x) + dropout(x) @ ((s·B@A) ⊙ M)ᵀ for each active adapter."""
    import torch.nn.functional as F

    out = self.base_layer(x, *args, **kwargs)
    for name in self.active_adapters:
        if name not in self.lora_A:
            continue
        delta = self.get_delta_weight(name) * self.carp_keep  # (O, I), masked
        xin = self.lora_dropout[name](x).to(delta.dtype)
        out = out + F.linear(xin, delta).to(out.dtype)
    return out


def _lora_layers(model: Any) -> list[tuple[str, Any]]:
    from peft.tuners.lora import LoraLayer

    return [
        (n, m)
        for n, m in model.named_modules()
        if isinstance(m, LoraLayer) and hasattr(m, "base_layer")
    ]


def _base_name(peft_module_name: str) -> str:
    """PEFT module name -> the base model's weight name."""
    name = peft_module_name.removeprefix(PEFT_PREFIX)
    return f"{name}.weight"


def wrap(params: Params, model: Any, masks: dict[str, Any]) -> Any:
    """Add LoRA adapters; base weights are frozen."""
    from peft import LoraConfig, get_peft_model

    present = {n.rsplit(".", 1)[-1] for n, _ in model.named_modules()}
    wanted = [] if params.target_modules == ALL_LINEAR else params.target_modules
    missing = [t for t in wanted if t not in present]
    if missing:
        raise ValueError(
            f"target_modules: {missing} not in the model; it has "
            f"{sorted(p for p in present if p.endswith('proj'))}"
        )
    cfg = LoraConfig(
        r=params.rank,
        lora_alpha=params.alpha,
        lora_dropout=params.dropout,
        target_modules=(
            ALL_LINEAR
            if params.target_modules == ALL_LINEAR
            else list(params.target_modules)
        ),
        bias="none",
        task_type="CAUSAL_LM",
    )
    peft_model = get_peft_model(model, cfg)
    if masks and params.masked_forward:
        for name, layer in _lora_layers(peft_model):
            keep = masks.get(_base_name(name))
            if keep is not None:
                dtype = layer.base_layer.weight.dtype
                layer.register_buffer("carp_keep", keep.to(dtype), persistent=False)
                layer.forward = types.MethodType(_masked_lora_forward, layer)
    return peft_model


def make_loss(params: Params, teacher: Any) -> Any:
    from stages.recover.full import make_loss as lm_loss

    return lm_loss(params, teacher)  # type: ignore[arg-type]


def masked_merge(peft_model: Any, masks: dict[str, Any]) -> Any:
    """Merge every adapter as W + ΔW ⊙ M and return the plain base model."""
    import torch

    with torch.no_grad():
        for name, layer in _lora_layers(peft_model):
            w = layer.base_layer.weight
            keep = masks.get(_base_name(name))
            for adapter in layer.active_adapters:
                if adapter not in layer.lora_A:
                    continue
                delta = layer.get_delta_weight(adapter).to(w.dtype)
                if keep is not None:
                    delta = delta.masked_fill(~keep.to(delta.device).bool(), 0)
                w.add_(delta)
    return peft_model.unload()  # drops the adapters without merging again


def unwrap(
    params: Params, model: Any, masks: dict[str, Any], out_dir: Path
) -> tuple[Any, dict[str, float]]:
    extra: dict[str, float] = {}
    if params.save_adapter:
        model.save_pretrained(str(out_dir / "adapter"), safe_serialization=True)
        extra["adapter_saved"] = 1.0
    return masked_merge(model, masks), extra
