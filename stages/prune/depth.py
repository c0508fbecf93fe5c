"""Depth pruning: remove whole decoder blocks with the lowest block influence,
BI = 1 - cos(block input, block output) on calibration tokens (Men et al. 2024,
"ShortGPT: Layers in Large Language Models are More Redundant Than You Expect")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from stages.prune import CalibratedParams, StructuredParams
from stages.prune.targets import Pruned, decoder_layers


class Params(StructuredParams, CalibratedParams):
    method: Literal["depth"] = "depth"
    blocks: int | None = Field(
        None,
        ge=0,
        description="Decoder blocks to remove; default round(sparsity * blocks).",
    )


def block_influence(x_in: Any, x_out: Any) -> float:
    """Mean over tokens of 1 - cos(x_in, x_out) along the hidden dimension."""
    import torch

    cos = torch.nn.functional.cosine_similarity(
        x_in.float().flatten(0, -2), x_out.float().flatten(0, -2), dim=-1
    )
    return float((1 - cos).mean())


def blocks_to_remove(scores: list[float], n: int) -> list[int]:
    """Indices of the ``n`` least influential blocks, ascending."""
    return sorted(sorted(range(len(scores)), key=lambda i: scores[i])[:n])


def remove_blocks(model: Any, drop: list[int]) -> None:
    """Delete decoder blocks in place and rewrite the config so the checkpoint
    reloads: ``num_hidden_layers``, per-layer lists, and each block's
    ``layer_idx`` (used by the KV cache) renumbered."""
    import torch

    layers = decoder_layers(model)
    kept = [blk for i, blk in enumerate(layers) if i not in set(drop)]
    for new_idx, blk in enumerate(kept):
        for mod in blk.modules():
            if hasattr(mod, "layer_idx"):
                mod.layer_idx = new_idx
    model.get_decoder().layers = torch.nn.ModuleList(kept)
    cfg = model.config
    old = cfg.num_hidden_layers
    cfg.num_hidden_layers = len(kept)
    for key, val in list(vars(cfg).items()):  # e.g. layer_types
        if isinstance(val, list) and len(val) == old and key != "architectures":
            setattr(cfg, key, [v for i, v in enumerate(val) if i not in set(drop)])


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Score every block on calibration data, then drop the lowest-BI ones."""
    from stages.prune.layerwise import BlockRunner, resolve_device

    n_layers = len(decoder_layers(model))
    n = (
        params.blocks
        if params.blocks is not None
        else round(params.sparsity * n_layers)
    )
    if n >= n_layers:
        raise ValueError(
            f"blocks: removing {n} of {n_layers} blocks leaves none; "
            f"use at most {n_layers - 1} (or a lower sparsity)"
        )
    ids, valid = calib.samples("depth")
    dev = resolve_device(params.device)
    runner = BlockRunner(model, ids, dev, params.batch_size, valid)
    scores = []
    every = slice(0, len(ids))
    for i in ctx.progress(range(n_layers), desc="depth block influence"):
        outs = runner.forward(runner.load(i))
        x_in, x_out = runner.tokens(runner.inps, every), runner.tokens(outs, every)
        scores.append(block_influence(x_in, x_out))
        runner.advance(i, outs)
    del runner
    drop = blocks_to_remove(scores, n)
    remove_blocks(model, drop)
    metrics = {f"block_influence.layer_{i}": s for i, s in enumerate(scores)}
    metrics["blocks_removed"] = float(len(drop))
    return Pruned(
        structured=True,
        metrics=metrics,
        manifest={"removed_blocks": drop, "block_influence": scores},
    )
