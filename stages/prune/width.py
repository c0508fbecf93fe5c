"""Width pruning: remove whole attention head groups and MLP channels ranked by
grouped importance (l1, l2, or first-order Taylor |w * dL/dw|), giving a smaller
dense model (Ma et al. 2023, "LLM-Pruner: On the Structural Pruning of LLMs")."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input
from stages.prune import StructuredParams
from stages.prune.targets import Pruned, decoder_layers


class Params(StructuredParams):
    method: Literal["width"] = "width"
    importance: Literal["l1", "l2", "taylor"] = Field(
        "l2",
        description="Grouped importance: sum of |w|, of w^2, or of |w * grad| "
        "(taylor; gradients of the LM loss on the calibration data).",
    )
    attention_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Fraction of key/value head groups removed per block (with "
        "their query heads, so grouped-query attention keeps its ratio), snapped "
        "to a head count that divides hidden_size; default `sparsity`.",
    )
    mlp_ratio: float | None = Field(
        None,
        ge=0,
        lt=1,
        description="Fraction of MLP channels removed per block; default: as many "
        "as bring the block's removed linear parameters to `sparsity`.",
    )
    calib: str | None = Input(
        "dataset",
        "Dataset stage whose records give the gradients of `importance: taylor` "
        "(l1/l2 read no data).",
        default=None,
    )

    @model_validator(mode="after")
    def _calib_iff_taylor(self) -> Params:
        if self.importance == "taylor" and self.calib is None:
            raise ValueError(
                "calib: importance 'taylor' needs calibration data; set "
                "`calib: <dataset stage>` (e.g. the world stage)"
            )
        if self.importance != "taylor" and self.calib is not None:
            raise ValueError(
                f"calib: importance '{self.importance}' reads no data; remove "
                "`calib` or use importance: taylor"
            )
        return self


def plan_width(
    hidden: int,
    n_heads: int,
    n_kv: int,
    head_dim: int,
    inter: int,
    sparsity: float,
    attention_ratio: float | None,
    mlp_ratio: float | None,
) -> tuple[int, int]:
    """Kept (kv groups, MLP channels) per block.

    Heads go by whole kv groups, and the kept head count must divide
    ``hidden_size`` (transformers validates Llama configs so), so the group
    count is snapped to the nearest feasible one (ties keep more). Unless
    ``mlp_ratio`` is given, MLP channels make up the rest of ``sparsity`` of
    the block's linear parameters.
    """
    g = n_heads // n_kv
    want = n_kv - (sparsity if attention_ratio is None else attention_ratio) * n_kv
    feasible = [k for k in range(1, n_kv + 1) if hidden % (k * g) == 0]
    keep_kv = min(feasible, key=lambda k: (abs(k - want), -k))
    per_group = hidden * head_dim * (2 * g + 2)  # q, o rows/cols + k, v rows
    per_channel = 3 * hidden  # gate, up rows + down column
    if mlp_ratio is None:
        block = per_group * n_kv + per_channel * inter
        left = sparsity * block - per_group * (n_kv - keep_kv)
        removed = min(max(round(left / per_channel), 0), inter)
    else:
        removed = int(mlp_ratio * inter + 0.5)
    keep_ch = inter - removed
    if keep_ch < 1:
        raise ValueError(
            "sparsity: removing that much leaves the MLP no channel; "
            "lower sparsity or attention_ratio"
        )
    return keep_kv, keep_ch


def element_scores(w: Any, g: Any, kind: str) -> Any:
    """Per-weight importance: |w| (l1), w^2 (l2) or |w * g| (taylor)."""
    w = w.float()
    if kind == "taylor":
        return (w * g.float()).abs()
    return w.abs() if kind == "l1" else w.pow(2)


def attention_group_importance(q: Any, k: Any, v: Any, o: Any, n_kv: int) -> Any:
    """(n_kv,) importance of each key/value group from per-weight scores of the
    q/k/v rows (outputs) and o columns (inputs) that belong to it."""
    return (
        q.sum(1).reshape(n_kv, -1).sum(1)
        + k.sum(1).reshape(n_kv, -1).sum(1)
        + v.sum(1).reshape(n_kv, -1).sum(1)
        + o.sum(0).reshape(n_kv, -1).sum(1)
    )


def mlp_channel_importance(gate: Any, up: Any, down: Any) -> Any:
    """(intermediate,) importance: gate and up rows plus the down column."""
    return gate.sum(1) + up.sum(1) + down.sum(0)


def keep_top(importance: Any, n_keep: int) -> Any:
    """Ascending indices of the ``n_keep`` most important units."""
    import torch

    return torch.topk(importance, n_keep).indices.sort().values


def unit_rows(groups: Any, size: int) -> Any:
    """Row indices covered by the kept groups of ``size`` consecutive rows."""
    import torch

    return (groups[:, None] * size + torch.arange(size)[None, :]).reshape(-1)


def _slice(lin: Any, idx: Any, dim: int) -> Any:
    """A new Linear keeping output rows (dim 0) or input columns (dim 1)."""
    import torch

    from stages.common.memory import release_pages

    w = lin.weight.data.index_select(dim, idx.to(lin.weight.device))
    bias = lin.bias is not None
    # built on meta (no random init of a large matrix), then given the slices
    new = torch.nn.Linear(w.shape[1], w.shape[0], bias=bias, device="meta")
    new.weight = torch.nn.Parameter(w, requires_grad=lin.weight.requires_grad)
    if bias:
        b = lin.bias.data
        b = b.index_select(0, idx.to(b.device)) if dim == 0 else b.clone()
        new.bias = torch.nn.Parameter(b, requires_grad=lin.bias.requires_grad)
    release_pages(lin.weight.data)  # the old matrix is dropped
    return new


def apply(model: Any, params: Params, calib: Any, ctx: Any) -> Pruned:
    """Shrink every block by the same number of head groups and channels (the
    HF config holds one size for all blocks), keeping the most important."""
    import torch

    cfg = model.config
    n_kv, n_heads = cfg.num_key_value_heads, cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_heads
    inter = cfg.intermediate_size
    q_n, kv_n = n_heads * hd, n_kv * hd  # rows of q and of k (or v)
    keep_kv, keep_ch = plan_width(
        cfg.hidden_size,
        n_heads,
        n_kv,
        hd,
        inter,
        params.sparsity,
        params.attention_ratio,
        params.mlp_ratio,
    )
    from stages.prune.layerwise import resolve_device
    from stages.prune.taylor import blockwise_grads

    layers = decoder_layers(model)
    imps: list[Any] = [None] * len(layers)

    def score(i: int, layer: Any) -> None:
        """Group importances of block i (taylor: while its gradients exist)."""
        att, mlp = layer.self_attn, layer.mlp

        def sc(lin: Any) -> Any:
            return element_scores(lin.weight.data, lin.weight.grad, params.importance)

        with torch.no_grad():
            if hasattr(att, "qkv_proj"):  # fused (Phi-3): rows q | k | v
                qkv = sc(att.qkv_proj)
                q, k, v = qkv[:q_n], qkv[q_n : q_n + kv_n], qkv[q_n + kv_n :]
            else:
                q, k, v = sc(att.q_proj), sc(att.k_proj), sc(att.v_proj)
            if hasattr(mlp, "gate_up_proj"):  # fused (Phi-3): rows gate | up
                gate_up = sc(mlp.gate_up_proj)
                gate, up = gate_up[:inter], gate_up[inter:]
            else:
                gate, up = sc(mlp.gate_proj), sc(mlp.up_proj)
            imps[i] = (
                attention_group_importance(q, k, v, sc(att.o_proj), n_kv).cpu(),
                mlp_channel_importance(gate, up, sc(mlp.down_proj)).cpu(),
            )

    if params.importance == "taylor":
        samples = calib.samples("width (taylor)")
        dev = resolve_device(params.device)
        blockwise_grads(model, samples, params.batch_size, dev, score, ctx.progress)
    else:
        for i, layer in enumerate(layers):
            score(i, layer)
    removed_heads = {}
    for i, layer in enumerate(ctx.progress(layers, desc="width")):
        att, mlp = layer.self_attn, layer.mlp
        a_imp, ch_imp = imps[i]
        kv = keep_top(a_imp, keep_kv)
        q_rows = unit_rows(kv, hd * n_heads // n_kv)
        kv_rows = unit_rows(kv, hd)
        if hasattr(att, "qkv_proj"):
            rows = torch.cat([q_rows, q_n + kv_rows, q_n + kv_n + kv_rows])
            att.qkv_proj = _slice(att.qkv_proj, rows, 0)
        else:
            att.q_proj = _slice(att.q_proj, q_rows, 0)
            att.k_proj = _slice(att.k_proj, kv_rows, 0)
            att.v_proj = _slice(att.v_proj, kv_rows, 0)
        att.o_proj = _slice(att.o_proj, q_rows, 1)
        if hasattr(att, "num_key_value_heads"):  # Phi-3 slices qkv by it
            att.num_key_value_heads = keep_kv
        ch = keep_top(ch_imp, keep_ch)
        if hasattr(mlp, "gate_up_proj"):
            mlp.gate_up_proj = _slice(mlp.gate_up_proj, torch.cat([ch, inter + ch]), 0)
        else:
            mlp.gate_proj = _slice(mlp.gate_proj, ch, 0)
            mlp.up_proj = _slice(mlp.up_proj, ch, 0)
        mlp.down_proj = _slice(mlp.down_proj, ch, 1)
        if hasattr(mlp, "intermediate_size"):
            mlp.intermediate_size = keep_ch
        removed_heads[i] = sorted(set(range(n_kv)) - set(kv.tolist()))
    cfg.head_dim = hd  # fixed explicitly: hidden_size // heads no longer holds
    cfg.num_attention_heads = keep_kv * (n_heads // n_kv)
    cfg.num_key_value_heads = keep_kv
    cfg.intermediate_size = keep_ch
    return Pruned(
        structured=True,
        metrics={
            "kv_groups_removed_per_block": float(n_kv - keep_kv),
            "mlp_channels_removed_per_block": float(inter - keep_ch),
        },
        manifest={"importance": params.importance, "removed_kv_groups": removed_heads},
    )
