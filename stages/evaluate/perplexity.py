"""Perplexity: token-normalised rolling log-likelihood of ppl.txt (lm-eval style)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.evaluate.scoring import continuation_nll, perplexity, rolling_windows

PPL_FILE = "ppl.txt"
DOC_SEPARATOR = "\n\n"  # stages.world.synthetic.PPL_SEPARATOR


def documents(world_dir: Path) -> list[str]:
    text = (Path(world_dir) / PPL_FILE).read_text(encoding="utf-8")
    return [d.strip("\n") for d in text.split(DOC_SEPARATOR) if d.strip()]


def rolling_nll(
    model: Any,
    docs_tokens: list[list[int]],
    prefix: int,
    pad: int,
    max_len: int,
    batch_size: int,
    progress: Any = None,
) -> tuple[float, int]:
    """(summed NLL, predicted tokens) over every document's rolling windows."""
    import torch

    windows = [
        w for toks in docs_tokens for w in rolling_windows(toks, prefix, max_len)
    ]
    starts = range(0, len(windows), batch_size)
    if progress is not None:
        starts = progress(starts, "perplexity", total=len(starts))
    total, count = 0.0, 0
    model.eval()
    for s in starts:
        chunk = windows[s : s + batch_size]
        rows = [(ctx + cont)[:-1] for ctx, cont in chunk]
        lengths = [len(r) for r in rows]
        ids = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        real = torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=real.long()).logits
        n_cont = [len(cont) for _, cont in chunk]
        nll = continuation_nll(logits, [cont for _, cont in chunk], lengths)
        total += float(nll.sum())
        count += sum(n_cont)
    return total, count


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """``{"ppl": ...}``: each document starts from bos, as in pretraining."""
    docs = documents(world_dir)
    toks = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    prefix = tokenizer.bos_token_id
    if prefix is None:
        prefix = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = rolling_nll(
        model, toks, prefix, pad, params.max_len, params.batch_size, ctx.progress
    )
    return {"ppl": perplexity(total, count)}
