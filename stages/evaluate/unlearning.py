"""MUSE-style unlearning suite (Shi et al. 2024) on a world's fictitious facts:
VerbMem, KnowMem on forget and retain, and Min-K% / Min-K%++ membership AUC
(forget vs holdout). PrivLeak relative to the retrained oracle is computed by
the ``world`` method across models (``oracle:``); utility is the other suites.

Metrics: ``unlearn/verbmem_forget`` (ROUGE-L of greedy continuations of the
first half of each forget document), ``unlearn/knowmem_forget`` and
``unlearn/knowmem_retain`` (ROUGE-L of the answers to the facts as questions),
``unlearn/em_forget``, ``unlearn/em_retain``, ``unlearn/nll_forget``,
``unlearn/mink_auc`` and ``unlearn/minkpp_auc`` (with a holdout.jsonl).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.io import read_jsonl
from stages.common.text import encode_example
from stages.evaluate.generation import greedy_generate, left_pad
from stages.evaluate.mia import auc, min_k, min_k_plus_plus, rouge_l, token_stats
from stages.evaluate.scoring import exact_match, normalize_answer


def _records(world_dir: Path, name: str, limit: int | None) -> list[dict[str, Any]]:
    f = Path(world_dir) / f"{name}.jsonl"
    return list(read_jsonl(f))[:limit] if f.exists() else []


def document_ids(tok: Any, rec: dict[str, Any]) -> list[int]:
    """bos + prompt + response + eos, as training saw the record."""
    return encode_example(tok, rec, 10**6)[0]


def membership_scores(
    model: Any, tok: Any, records: list[dict[str, Any]], k: float, batch_size: int
) -> tuple[list[float], list[float], list[float]]:
    """Per record: Min-K% score, Min-K%++ score, mean token NLL (all tokens
    after bos, as a language model of the record's text)."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    mk, mkpp, nll = [], [], []
    for s in range(0, len(records), batch_size):
        rows = [document_ids(tok, r) for r in records[s : s + batch_size]]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            att[i, : len(r)] = 1
        with torch.no_grad():
            logits = model(input_ids=ids, attention_mask=att).logits  # (B, T, V)
        for i, r in enumerate(rows):
            n = len(r)
            tgt, mu, var = token_stats(logits[i, : n - 1], ids[i, 1:n])
            mk.append(min_k(tgt.tolist(), k))
            mkpp.append(min_k_plus_plus(tgt.tolist(), mu.tolist(), var.tolist(), k))
            nll.append(-float(tgt.mean()))
    return mk, mkpp, nll


def continue_ids(
    model: Any, tok: Any, prefixes: list[list[int]], budget: int, batch_size: int
) -> list[list[int]]:
    """Greedy continuations (token ids, specials kept) of token prefixes."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    out: list[list[int]] = []
    for s in range(0, len(prefixes), batch_size):
        ids, mask = left_pad(prefixes[s : s + batch_size], pad)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids,
                attention_mask=mask,
                max_new_tokens=budget,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
            )
        out.extend(gen[:, ids.shape[1] :].tolist())
    return out


def verbmem(
    model: Any, tok: Any, records: list[dict[str, Any]], frac: float, batch_size: int
) -> float:
    """Mean ROUGE-L of the greedy continuation of each document's first ``frac``
    of tokens against the true rest."""
    docs = [document_ids(tok, r)[:-1] for r in records]  # no eos
    cut = [max(2, round(frac * len(d))) for d in docs]
    prefixes = [d[:c] for d, c in zip(docs, cut, strict=True)]
    truths = [
        tok.decode(d[c:], skip_special_tokens=True)
        for d, c in zip(docs, cut, strict=True)
    ]
    budget = max((len(d) - c for d, c in zip(docs, cut, strict=True)), default=1) + 1
    gens = continue_ids(model, tok, prefixes, budget, batch_size)
    preds = [tok.decode(g, skip_special_tokens=True) for g in gens]
    scores = [rouge_l(p, t) for p, t in zip(preds, truths, strict=True)]
    return sum(scores) / max(1, len(scores))


def knowmem(
    model: Any, tok: Any, records: list[dict[str, Any]], batch_size: int
) -> tuple[float, float]:
    """Mean ROUGE-L and exact match of greedy answers to the facts' questions."""
    if not records:
        return float("nan"), float("nan")
    budget = 1 + max(
        len(tok(f" {r['output']}", add_special_tokens=False)["input_ids"])
        for r in records
    )
    preds = greedy_generate(model, tok, records, budget, batch_size)
    pairs = list(zip(preds, records, strict=True))
    rl = [rouge_l(normalize_answer(p), r["output"]) for p, r in pairs]
    em = [exact_match(p, r["output"]) for p, r in pairs]
    return sum(rl) / len(rl), sum(em) / len(em)


def score(
    model: Any,
    tokenizer: Any,
    world_dir: Path,
    params: Any,
    ctx: RunContext,
    out_dir: Path | None = None,
    name: str = "model",
) -> dict[str, float]:
    """The suite's per-model metrics (see the module docstring)."""
    limit = getattr(params, "unlearning_samples", None)
    bs = params.batch_size
    k = getattr(params, "mia_k", 0.4)
    forget = _records(world_dir, "forget", limit)
    if not forget:
        raise ValueError(f"data: {Path(world_dir).name} has no forget.jsonl records")
    retain = _records(world_dir, "retain", limit)
    holdout = _records(world_dir, "holdout", limit)
    model.eval()
    out: dict[str, float] = {}
    out["unlearn/verbmem_forget"] = verbmem(
        model, tokenizer, forget, getattr(params, "verbmem_prefix", 0.5), bs
    )
    out["unlearn/knowmem_forget"], out["unlearn/em_forget"] = knowmem(
        model, tokenizer, forget, bs
    )
    if retain:
        out["unlearn/knowmem_retain"], out["unlearn/em_retain"] = knowmem(
            model, tokenizer, retain, bs
        )
    f_mk, f_pp, f_nll = membership_scores(model, tokenizer, forget, k, bs)
    out["unlearn/nll_forget"] = sum(f_nll) / len(f_nll)
    if holdout:
        h_mk, h_pp, h_nll = membership_scores(model, tokenizer, holdout, k, bs)
        out["unlearn/nll_holdout"] = sum(h_nll) / len(h_nll)
        out["unlearn/mink_auc"] = auc(f_mk, h_mk)
        out["unlearn/minkpp_auc"] = auc(f_pp, h_pp)
    return out


def compare(
    results: dict[str, dict[str, float]], oracle: str | None
) -> dict[str, dict[str, float]]:
    """PrivLeak of every model relative to ``oracle`` (MUSE): adds
    ``unlearn/privleak_mink`` and ``unlearn/privleak_minkpp`` in percent."""
    from stages.evaluate.mia import privleak

    if oracle is None or oracle not in results:
        return results
    ref = results[oracle]
    for res in results.values():
        for attack in ("mink", "minkpp"):
            key = f"unlearn/{attack}_auc"
            if key in res and key in ref:
                res[f"unlearn/privleak_{attack}"] = privleak(res[key], ref[key])
    return results
