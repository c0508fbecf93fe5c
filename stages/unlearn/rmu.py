"""RMU, Representation Misdirection for Unlearning (Li et al. 2024, WMDP):
on forget data, push the residual stream after decoder layer ``layer`` toward
a fixed random direction scaled by ``steering_coeff``; on retain data, keep it
where the input model has it (weight ``retain_weight``). Only the MLP
down-projections of layers ``layer-2 .. layer`` train (the WMDP recipe).

Params: retain, layer, steering_coeff, retain_weight, update_layers,
update_params, positions.
"""

from __future__ import annotations

import contextlib
from typing import Any, Literal

from pydantic import Field

from pipelines.contract import Input
from stages.unlearn import Params as UnlearnParams


class Params(UnlearnParams):
    method: Literal["rmu"] = Field("rmu", description="RMU.")
    retain: str = Input("dataset", "Upstream dataset stage whose activations stay.")
    layer: int = Field(
        2, ge=0, description="Decoder layer whose output is steered (0-based)."
    )
    steering_coeff: float = Field(
        20.0, gt=0, description="Norm c of the random steering target c·u/‖u‖."
    )
    retain_weight: float = Field(
        1.0, ge=0, description="α: weight of the retain activation loss."
    )
    update_layers: tuple[int, ...] | None = Field(
        None, description="Decoder layers that train; default layer-2 .. layer."
    )
    update_params: tuple[str, ...] = Field(
        ("mlp.down_proj.weight",),
        description="Parameter name suffixes that train within those layers.",
    )
    positions: Literal["all", "response"] = Field(
        "all",
        description="Token positions in the activation losses: every token "
        "(WMDP) or response tokens only (OpenUnlearning).",
    )
    lr: float = Field(5e-3, gt=0, description="Peak learning rate (AdamW).")


def layer_module(model: Any, layer: int) -> Any:
    """Decoder layer ``layer`` of an HF causal LM (``model.layers.<i>``)."""
    layers = model.get_decoder().layers
    if not 0 <= layer < len(layers):
        raise ValueError(f"layer: {layer} is out of range; the model has {len(layers)}")
    return layers[layer]


@contextlib.contextmanager
def capture(module: Any) -> Any:
    """Collect ``module``'s output hidden states (B, T, D) during a forward."""
    out: list[Any] = []

    def hook(mod: Any, args: Any, output: Any) -> None:
        out.append(output[0] if isinstance(output, tuple) else output)

    handle = module.register_forward_hook(hook)
    try:
        yield out
    finally:
        handle.remove()


def select_trainable(params: Params, model: Any) -> list[str]:
    """Freeze all but ``update_params`` of ``update_layers``; trainable names."""
    layers = params.update_layers
    if layers is None:
        layers = tuple(range(max(0, params.layer - 2), params.layer + 1))
    prefix = [f"layers.{i}." for i in layers]
    names = []
    for name, p in model.named_parameters():
        on = any(f"{pre}{s}" in name for pre in prefix for s in params.update_params)
        p.requires_grad_(on)
        if on:
            names.append(name)
    if not names:
        raise ValueError(
            f"update_params: no parameter of layers {list(layers)} ends with "
            f"{list(params.update_params)}"
        )
    return names


def make_loss(params: Params, setup: Any) -> Any:
    import torch

    from stages.unlearn.losses import activation_mse, control_vector, response_nll
    from stages.unlearn.retain import forward_logp

    select_trainable(params, setup.model)
    ref = setup.reference()
    ref_layer = layer_module(ref, params.layer)
    gen = torch.Generator().manual_seed(setup.seed)
    hidden = setup.model.config.hidden_size
    target = control_vector(hidden, params.steering_coeff, gen)  # (1, 1, D)

    def positions(batch: dict[str, Any], prefix: str) -> Any:
        if params.positions == "response":
            return batch[f"{prefix}labels"] != -100
        return batch[f"{prefix}attention_mask"].bool()

    def loss_fn(model: Any, batch: dict[str, Any], info: Any) -> tuple[Any, dict]:
        lay = layer_module(model, params.layer)
        with capture(lay) as acts:
            _, logp, n = forward_logp(model, batch)
        forget = activation_mse(
            acts[0], target.to(acts[0].device), positions(batch, "")
        )
        with capture(lay) as r_acts:
            model(
                input_ids=batch["retain_input_ids"],
                attention_mask=batch["retain_attention_mask"],
            )
        with torch.no_grad(), capture(ref_layer) as ref_acts:
            ref(
                input_ids=batch["retain_input_ids"],
                attention_mask=batch["retain_attention_mask"],
            )
        retain = activation_mse(r_acts[0], ref_acts[0], positions(batch, "retain_"))
        logs = {
            "forget_nll": response_nll(logp, n).detach(),
            "forget_act_mse": forget.detach(),
            "retain_act_mse": retain.detach(),
        }
        return forget + params.retain_weight * retain, logs

    return loss_fn
