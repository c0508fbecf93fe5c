"""Tiny Llama (LLaMA, Touvron 2023) trained from scratch with AdamW and cosine lr.

Loss on the whole sequence by default: the base model is then a language model
of the world's text, which ppl.txt, calibration-based pruning and
perplexity-based selection all assume; the response tokens are still most of
what EM needs. Deterministic: same params + world -> identical safetensors.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Literal

from pipelines.contract import RunContext, StageResult
from stages.common.io import load_tokenizer, read_jsonl, save_model
from stages.common.text import IGNORE_INDEX, collate, encode_example
from stages.world.people import drop_people, excluded_people
from stages.world.pretrain import Params as PretrainParams
from stages.world.pretrain import describe


class Params(PretrainParams):
    method: Literal["llama"] = "llama"


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1, then cosine decay to ``min_ratio`` at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def warmup_steps(params: PretrainParams) -> int:
    return int(params.warmup_ratio * params.steps)


def build_model(params: PretrainParams, tokenizer: Any) -> Any:
    """A freshly initialised LlamaForCausalLM (tied embeddings) for ``tokenizer``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        max_position_embeddings=max(256, params.max_len),
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **describe(params),
    )
    return LlamaForCausalLM(config)


def encode_all(
    tokenizer: Any, records: list[dict[str, Any]], params: PretrainParams
) -> list[tuple[list[int], list[int]]]:
    rows = [encode_example(tokenizer, r, params.max_len) for r in records]
    if params.loss_on == "sequence":
        # every token but bos is a target (bos is never predicted)
        rows = [(ids, [IGNORE_INDEX, *ids[1:]]) for ids, _ in rows]
    return rows


def train_loop(
    model: Any,
    rows: list[tuple[list[int], list[int]]],
    pad_id: int,
    params: PretrainParams,
    seed: int,
    ctx: RunContext,
) -> list[float]:
    """AdamW over shuffled epochs of ``rows``; returns the logged losses."""
    import torch

    gen = torch.Generator().manual_seed(seed)
    decay = [p for n, p in model.named_parameters() if p.dim() >= 2]
    other = [p for n, p in model.named_parameters() if p.dim() < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": params.weight_decay},
            {"params": other, "weight_decay": 0.0},
        ],
        lr=params.lr,
        betas=(0.9, 0.95),
    )
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt,
        lambda s: lr_factor(s, params.steps, warmup_steps(params), params.min_lr_ratio),
    )
    order: list[int] = []
    losses: list[float] = []
    running = 0.0
    model.train()
    for step in ctx.progress(range(params.steps), "pretrain", total=params.steps):
        if len(order) < params.batch_size:
            order += torch.randperm(len(rows), generator=gen).tolist()
        idx, order = order[: params.batch_size], order[params.batch_size :]
        batch = collate([rows[i] for i in idx], pad_id)
        loss = model(**batch).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        if (step + 1) % params.log_every == 0 or step + 1 == params.steps:
            n = (step % params.log_every) + 1
            losses.append(running / n)
            ctx.log_metrics(
                {"train/loss": running / n, "train/lr": sched.get_last_lr()[0]},
                step + 1,
            )
            running = 0.0
    return losses


def train(
    params: Params, world_dir: Path, out_dir: Path, ctx: RunContext
) -> StageResult:
    """Train on ``pretrain.jsonl``, score on the eval sets and ppl.txt, save."""
    import torch

    from stages.evaluate import exact_match, perplexity
    from stages.evaluate.world import Params as EvalParams

    seed = ctx.seed
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(world_dir / "tokenizer")
    records = list(read_jsonl(world_dir / "pretrain.jsonl"))
    n_all = len(records)
    records = drop_people(records, excluded_people(world_dir, params.exclude))
    if not records:
        raise ValueError(
            f"data: {world_dir}/pretrain.jsonl is empty; raise pretrain_size"
        )
    rows = encode_all(tokenizer, records, params)
    model = build_model(params, tokenizer)
    t0 = time.perf_counter()
    losses = train_loop(model, rows, tokenizer.pad_token_id, params, seed, ctx)
    seconds = time.perf_counter() - t0

    model.eval()
    ev = EvalParams(
        models=["self"],
        data="world",
        batch_size=params.eval_batch_size,
        max_len=max(params.max_len, 8),
    )
    metrics = exact_match.score(model, tokenizer, world_dir, ev, ctx)
    metrics.update(perplexity.score(model, tokenizer, world_dir, ev, ctx))
    metrics.update(
        {
            "train/loss_first": losses[0],
            "train/loss_final": losses[-1],
            "train/seconds": seconds,
            "params": float(sum(p.numel() for p in model.parameters())),
        }
    )
    if params.exclude:
        metrics["train/excluded_records"] = float(n_all - len(records))
    save_model(model, tokenizer, out_dir)
    fams = sorted(k for k in metrics if k.startswith("em/") and k != "em/mean")
    table = ", ".join(f"{k[3:]} {metrics[k]:.2f}" for k in fams)
    summary = (
        f"em/mean {metrics['em/mean']:.3f} ({table}); ppl {metrics['ppl']:.2f}; "
        f"loss {losses[0]:.3f} -> {losses[-1]:.3f} in {seconds:.0f}s"
    )
    return StageResult(metrics=metrics, summary=summary)
