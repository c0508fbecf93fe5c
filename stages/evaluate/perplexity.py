"""Perplexity: rolling log-likelihood of ppl.txt (lm-eval style) and answer-only.

``ppl`` is token perplexity over the whole text (prompt and answer tokens of
every document, lm-eval ``loglikelihood_rolling``); ``ppl_answer`` scores only
the answer tokens (response + eos, the training labels of ``encode_example``)
of the world's held-out eval records given their prompts: the part of the text
a compressed model can get wrong, so it moves more than ``ppl``. Per-record
answer NLLs go to ``answers/<model>.jsonl`` (for intervals and paired
differences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.io import write_jsonl
from stages.evaluate.scoring import continuation_nll, perplexity, rolling_windows

PPL_FILE = "ppl.txt"
DOC_SEPARATOR = "\n\n"  # stages.world.synthetic.PPL_SEPARATOR


def model_files(name: str) -> list[str]:
    """Files :func:`score` writes for model ``name`` (relative to out_dir)."""
    return [f"answers/{name}.jsonl"]


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


def answer_nll(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    max_len: int,
    batch_size: int,
    progress: Any = None,
) -> list[tuple[float, int]]:
    """(summed NLL, answer tokens) of each record's response + eos given
    bos + prompt, exactly the labels recovery trains on (``encode_example``)."""
    import torch

    from stages.common.text import IGNORE_INDEX, collate, encode_example

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = [encode_example(tokenizer, r, max_len) for r in records]
    starts = range(0, len(examples), batch_size)
    if progress is not None:
        starts = progress(starts, "answer perplexity", total=len(starts))
    out: list[tuple[float, int]] = []
    model.eval()
    for s in starts:
        b = collate(examples[s : s + batch_size], pad)
        with torch.no_grad():
            logits = model(
                input_ids=b["input_ids"], attention_mask=b["attention_mask"]
            ).logits
        logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # (B, T-1, V)
        labels = b["labels"][:, 1:]  # (B, T-1): position t predicts token t+1
        keep = labels != IGNORE_INDEX
        tok_lp = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        nll = -(tok_lp * keep).sum(-1)  # (B,)
        out += [(float(v), int(n)) for v, n in zip(nll, keep.sum(-1), strict=True)]
    return out


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """``ppl`` (each document from bos, as in pretraining) and ``ppl_answer``;
    writes ``answers/<name>.jsonl`` when ``out_dir`` is set."""
    from stages.evaluate.exact_match import eval_sets

    docs = documents(world_dir)
    toks = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    prefix = tokenizer.bos_token_id
    if prefix is None:
        prefix = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    total, count = rolling_nll(
        model, toks, prefix, pad, params.max_len, params.batch_size, ctx.progress
    )
    records = [
        r
        for rs in eval_sets(world_dir, params.max_samples_per_family).values()
        for r in rs
    ]
    nlls = answer_nll(
        model, tokenizer, records, params.max_len, params.batch_size, ctx.progress
    )
    if out_dir is not None:
        (out_dir / "answers").mkdir(exist_ok=True)
        rows = [
            {"id": r["id"], "family": r["family"], "nll": round(v, 9), "tokens": n}
            for r, (v, n) in zip(records, nlls, strict=True)
        ]
        write_jsonl(rows, out_dir / "answers" / f"{name}.jsonl")
    return {
        "ppl_answer": perplexity(sum(v for v, _ in nlls), sum(n for _, n in nlls)),
        "ppl": perplexity(total, count),
    }
