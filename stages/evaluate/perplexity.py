"""Perplexity: rolling log-likelihood of ppl.txt (lm-eval style) and answer-only.

``ppl`` is token perplexity over the whole text (prompt and answer tokens of
every document, lm-eval ``loglikelihood_rolling`` with bos as context, not
scored); ``word_perplexity`` and ``bits_per_byte`` divide the same summed NLL
by the documents' words and UTF-8 bytes exactly as lm-eval's rolling tasks do
(``count_words`` / ``count_bytes`` of the scored text), so models with
different tokenizers compare fairly. ``ppl_answer`` scores only the answer
tokens (response + eos, the training labels of ``encode_example``) of the
world's held-out eval records given their prompts: the part of the text a
compressed model can get wrong, so it moves more than ``ppl``. Per-record
answer NLLs go to ``answers/<model>.jsonl`` and per-document NLLs with their
token/word/byte counts to ``documents/<model>.jsonl`` (for intervals and
paired differences).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.device import model_device
from stages.common.io import write_jsonl
from stages.evaluate.scoring import (
    bits_per_byte,
    continuation_nll,
    count_bytes,
    count_words,
    perplexity,
    rolling_windows,
)

PPL_FILE = "ppl.txt"
DOC_SEPARATOR = "\n\n"  # stages.world.synthetic.PPL_SEPARATOR


def model_files(name: str) -> list[str]:
    """Files :func:`score` writes for model ``name`` (relative to out_dir)."""
    return [f"answers/{name}.jsonl", f"documents/{name}.jsonl"]


def documents(world_dir: Path) -> list[str]:
    text = (Path(world_dir) / PPL_FILE).read_text(encoding="utf-8")
    return [d.strip("\n") for d in text.split(DOC_SEPARATOR) if d.strip()]


def windows_nll(
    model: Any,
    windows: list[tuple[list[int], list[int]]],
    pad: int,
    batch_size: int,
    progress: Any = None,
    desc: str = "perplexity",
    by_length: bool = False,
) -> list[float]:
    """Summed NLL of each ``(context, continuation)`` window's continuation,
    batched on right-padded inputs ``(context + continuation)[:-1]`` on the
    model's device; ``by_length``: batches of similar length (longest first,
    results in the windows' order), little padding on a GPU."""
    import torch

    order = list(range(len(windows)))
    if by_length:
        order.sort(key=lambda i: -len(windows[i][0]) - len(windows[i][1]))
    dev = model_device(model)
    starts = range(0, len(order), batch_size)
    if progress is not None:
        starts = progress(starts, desc, total=len(starts))
    out = [0.0] * len(windows)
    model.eval()
    for s in starts:
        idx = order[s : s + batch_size]
        chunk = [windows[i] for i in idx]
        rows = [(ctx + cont)[:-1] for ctx, cont in chunk]
        lengths = [len(r) for r in rows]
        ids = torch.full((len(rows), max(lengths)), pad, dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = torch.tensor(row)
        real = torch.arange(ids.shape[1])[None, :] < torch.tensor(lengths)[:, None]
        with torch.no_grad():
            logits = model(
                input_ids=ids.to(dev), attention_mask=real.long().to(dev)
            ).logits
        nll = continuation_nll(logits, [c for _, c in chunk], lengths).tolist()
        for i, v in zip(idx, nll, strict=True):
            out[i] = v
    return out


def rolling_nll(
    model: Any,
    docs_tokens: list[list[int]],
    prefix: int,
    pad: int,
    max_len: int,
    batch_size: int,
    progress: Any = None,
) -> list[tuple[float, int]]:
    """(summed NLL, predicted tokens) of each document over its rolling windows."""
    windows, owner = [], []
    for d, toks in enumerate(docs_tokens):
        doc_windows = rolling_windows(toks, prefix, max_len)
        windows += doc_windows
        owner += [d] * len(doc_windows)
    nll = windows_nll(model, windows, pad, batch_size, progress)
    out = [(0.0, 0)] * len(docs_tokens)
    for d, (_, cont), v in zip(owner, windows, nll, strict=True):
        out[d] = (out[d][0] + v, out[d][1] + len(cont))
    return out


def answer_nll(
    model: Any,
    tokenizer: Any,
    records: list[dict[str, Any]],
    max_len: int,
    batch_size: int,
    progress: Any = None,
    template: str | None = None,
) -> list[tuple[float, int]]:
    """(summed NLL, answer tokens) of each record's response + eos given
    bos + prompt, exactly the labels recovery trains on (``encode_example``
    under ``template``; None: carp)."""
    import torch

    from stages.common.text import IGNORE_INDEX, collate, encode_example

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    examples = [encode_example(tokenizer, r, max_len, template) for r in records]
    starts = range(0, len(examples), batch_size)
    if progress is not None:
        starts = progress(starts, "answer perplexity", total=len(starts))
    out: list[tuple[float, int]] = []
    model.eval()
    for s in starts:
        b = collate(examples[s : s + batch_size], pad)
        dev = model_device(model)
        with torch.no_grad():
            logits = model(
                input_ids=b["input_ids"].to(dev),
                attention_mask=b["attention_mask"].to(dev),
            ).logits
        logp = torch.log_softmax(logits[:, :-1].double(), dim=-1)  # (B, T-1, V)
        labels = b["labels"][:, 1:].to(dev)  # (B, T-1): t predicts token t+1
        keep = labels != IGNORE_INDEX
        tok_lp = logp.gather(-1, labels.clamp(min=0)[..., None])[..., 0]
        nll = -(tok_lp * keep).sum(-1)  # (B,)
        out += [
            (float(v), int(n))
            for v, n in zip(nll.cpu(), keep.sum(-1).cpu(), strict=True)
        ]
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
    """``ppl``, ``word_perplexity``, ``bits_per_byte`` (each document from bos,
    as in pretraining) and ``ppl_answer``; writes ``answers/<name>.jsonl`` and
    ``documents/<name>.jsonl`` when ``out_dir`` is set."""
    from stages.evaluate.exact_match import eval_sets

    docs = documents(world_dir)
    toks = [tokenizer(d, add_special_tokens=False)["input_ids"] for d in docs]
    prefix = tokenizer.bos_token_id
    if prefix is None:
        prefix = tokenizer.eos_token_id
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    per_doc = rolling_nll(
        model, toks, prefix, pad, params.max_len, params.batch_size, ctx.progress
    )
    doc_rows = [
        {"id": i, "nll": v, "tokens": n, "words": count_words(d)}
        | {"bytes": count_bytes(d)}
        for i, (d, (v, n)) in enumerate(zip(docs, per_doc, strict=True))
    ]
    records = [
        r
        for rs in eval_sets(world_dir, params.max_samples_per_family).values()
        for r in rs
    ]
    nlls = answer_nll(
        model,
        tokenizer,
        records,
        params.max_len,
        params.batch_size,
        ctx.progress,
        template=getattr(params, "template", None),
    )
    if out_dir is not None:
        (out_dir / "answers").mkdir(exist_ok=True)
        rows = [
            {"id": r["id"], "family": r["family"], "nll": round(v, 9), "tokens": n}
            for r, (v, n) in zip(records, nlls, strict=True)
        ]
        write_jsonl(rows, out_dir / "answers" / f"{name}.jsonl")
        (out_dir / "documents").mkdir(exist_ok=True)
        rounded = [{**r, "nll": round(r["nll"], 9)} for r in doc_rows]
        write_jsonl(rounded, out_dir / "documents" / f"{name}.jsonl")
    total = sum(r["nll"] for r in doc_rows)

    def summed(field: str) -> int:
        return sum(r[field] for r in doc_rows)

    return {
        "ppl_answer": perplexity(sum(v for v, _ in nlls), sum(n for _, n in nlls)),
        "ppl": perplexity(total, summed("tokens")),
        "word_perplexity": perplexity(total, summed("words")),
        "bits_per_byte": bits_per_byte(total, summed("bytes")),
    }
