"""MUSE-style unlearning suite (Shi et al. 2024) on a world's fictitious facts:
VerbMem, KnowMem on forget and retain, and Min-K% / Min-K%++ membership AUC
(forget vs holdout). PrivLeak relative to the retrained oracle is computed by
the ``world`` method across models (``oracle:``); utility is the other suites.

Metrics: ``unlearn/verbmem_forget`` (ROUGE-L of greedy continuations of the
first half of each forget document), ``unlearn/knowmem_forget`` and
``unlearn/knowmem_retain`` (ROUGE-L of the answers to the facts as questions),
``unlearn/em_forget``, ``unlearn/em_retain``, ``unlearn/nll_forget``,
``unlearn/mink_auc`` and ``unlearn/minkpp_auc`` (with a holdout.jsonl).
Membership scores read the response tokens by default (``mia_tokens``): the
tokens the unlearning losses train on; ``document`` adds the prompt, whose
person's name no method unlearns.
Each with a 95% interval (``_lo``/``_hi``) from a bootstrap of the *people*
(a person's records are not independent): of the mean for ROUGE-L, exact
match and NLL, of the forget and holdout people for the AUCs. The
per-record membership scores go to ``membership/<model>.jsonl``; ``compare``
reads them for a paired bootstrap interval of PrivLeak (model and oracle on the
same resamples).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext
from stages.common.device import model_device
from stages.common.io import read_jsonl
from stages.common.text import IGNORE_INDEX, encode_example
from stages.evaluate.generation import greedy_generate, left_pad
from stages.evaluate.intervals import rng_seed, stratified_bootstrap, wilson
from stages.evaluate.mia import (
    auc,
    bootstrap_aucs,
    cluster_bootstrap,
    min_k,
    min_k_plus_plus,
    percentile_interval,
    rouge_l,
    token_stats,
)
from stages.evaluate.scoring import exact_match, normalize_answer

ATTACKS = ("mink", "minkpp")


def model_files(name: str) -> list[str]:
    """Per-model files this suite writes (kept with the per-model cache)."""
    return [f"membership/{name}.jsonl"]


def _records(
    world_dir: Path, name: str, limit: int | None, seed: int = 0
) -> list[dict[str, Any]]:
    """The records of ``<name>.jsonl``; with ``limit``, a seeded sample of that
    many in file order. Not the first ``limit``: the files list each person's
    facts together, so a prefix would hold only the first few people."""
    f = Path(world_dir) / f"{name}.jsonl"
    recs = list(read_jsonl(f)) if f.exists() else []
    if limit is None or limit >= len(recs):
        return recs
    keep = random.Random(f"{seed}:unlearning:{name}").sample(range(len(recs)), limit)
    return [recs[i] for i in sorted(keep)]


def document_ids(
    tok: Any, rec: dict[str, Any], template: str | None = None
) -> list[int]:
    """bos + prompt + response + eos, as training saw the record (under
    ``template``; None: carp)."""
    return encode_example(tok, rec, 10**6, template)[0]


def scored_positions(ids: list[int], labels: list[int], tokens: str) -> list[int]:
    """Indices into a record's next-token targets (``ids[1:]``; ``ids``,
    ``labels`` from ``encode_example``) that the membership scores read: every
    token (``document``) or the response and eos (``response``: the tokens
    every unlearning loss trains on; the prompt names the person, which no
    method unlearns)."""
    if tokens == "document":
        return list(range(len(ids) - 1))
    return [i for i, lab in enumerate(labels[1:]) if lab != IGNORE_INDEX]


def membership_scores(
    model: Any,
    tok: Any,
    records: list[dict[str, Any]],
    k: float,
    batch_size: int,
    tokens: str = "response",
    template: str | None = None,
) -> tuple[list[float], list[float], list[float]]:
    """Per record: Min-K% score, Min-K%++ score and mean NLL over the tokens
    ``scored_positions`` picks."""
    import torch

    pad = tok.pad_token_id if tok.pad_token_id is not None else 0
    mk, mkpp, nll = [], [], []
    for s in range(0, len(records), batch_size):
        batch = records[s : s + batch_size]
        enc = [encode_example(tok, r, 10**6, template) for r in batch]
        rows = [r for r, _ in enc]
        width = max(map(len, rows))
        ids = torch.full((len(rows), width), pad, dtype=torch.long)
        att = torch.zeros_like(ids)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            att[i, : len(r)] = 1
        dev = model_device(model)
        with torch.no_grad():
            logits = model(input_ids=ids.to(dev), attention_mask=att.to(dev)).logits
        logits = logits.cpu()  # (B, T, V): the statistics on the host
        for i, r in enumerate(rows):
            n = len(r)
            tgt, mu, var = token_stats(logits[i, : n - 1], ids[i, 1:n])
            keep = torch.tensor(scored_positions(r, enc[i][1], tokens))
            tgt, mu, var = tgt[keep], mu[keep], var[keep]
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
        dev = model_device(model)
        with torch.no_grad():
            gen = model.generate(
                input_ids=ids.to(dev),
                attention_mask=mask.to(dev),
                max_new_tokens=budget,
                do_sample=False,
                pad_token_id=pad,
                eos_token_id=tok.eos_token_id,
            )
        out.extend(gen[:, ids.shape[1] :].cpu().tolist())
    return out


def verbmem(
    model: Any,
    tok: Any,
    records: list[dict[str, Any]],
    frac: float,
    batch_size: int,
    template: str | None = None,
) -> list[float]:
    """ROUGE-L of the greedy continuation of each document's first ``frac`` of
    tokens against the true rest, per record."""
    docs = [document_ids(tok, r, template)[:-1] for r in records]  # no eos
    cut = [max(2, round(frac * len(d))) for d in docs]
    prefixes = [d[:c] for d, c in zip(docs, cut, strict=True)]
    truths = [
        tok.decode(d[c:], skip_special_tokens=True)
        for d, c in zip(docs, cut, strict=True)
    ]
    budget = max((len(d) - c for d, c in zip(docs, cut, strict=True)), default=1) + 1
    gens = continue_ids(model, tok, prefixes, budget, batch_size)
    preds = [tok.decode(g, skip_special_tokens=True) for g in gens]
    return [rouge_l(p, t) for p, t in zip(preds, truths, strict=True)]


def knowmem(
    model: Any,
    tok: Any,
    records: list[dict[str, Any]],
    batch_size: int,
    template: str | None = None,
) -> tuple[list[float], list[float]]:
    """ROUGE-L and exact match of greedy answers to the facts' questions, per
    record."""
    if not records:
        return [], []
    from stages.evaluate.exact_match import answer_budget

    budget = answer_budget(tok, records, template)
    preds = greedy_generate(model, tok, records, budget, batch_size, template=template)
    pairs = list(zip(preds, records, strict=True))
    rl = [rouge_l(normalize_answer(p), r["output"]) for p, r in pairs]
    em = [float(exact_match(p, r["output"])) for p, r in pairs]
    return rl, em


def mean_with_interval(
    key: str,
    values: list[float],
    seed: list[int],
    proportion: bool = False,
    groups: list[str] | None = None,
) -> dict[str, float]:
    """``key`` = the mean of ``values`` and its 95% interval: a bootstrap of
    whole ``groups`` (the people) when given, else Wilson for a proportion and
    a record bootstrap of the mean otherwise."""
    if not values:
        return {}
    if groups is not None:
        lo, hi = cluster_bootstrap(values, groups, [*seed, len(values)])
    elif proportion:
        lo, hi = wilson(round(sum(values)), len(values))
    else:
        lo, hi = stratified_bootstrap([values], [*seed, len(values)])
    return {key: sum(values) / len(values), f"{key}_lo": lo, f"{key}_hi": hi}


def subjects(records: list[dict[str, Any]]) -> list[str]:
    """The person each record is about (its id where it names none): the
    cluster of the suite's bootstraps."""
    return [str(r.get("subject") or r["id"]) for r in records]


def auc_with_interval(
    key: str,
    members: list[float],
    nonmembers: list[float],
    seed: list[int],
    groups: tuple[list[str], list[str]] | None = None,
) -> dict[str, float]:
    """ROC AUC (scikit-learn) and its 95% bootstrap interval, resampling whole
    ``groups`` (the people) when given."""
    g_m, g_n = groups if groups is not None else (None, None)
    boot = bootstrap_aucs([members], [nonmembers], seed, 2000, g_m, g_n)
    lo, hi = percentile_interval(boot[0])
    return {key: auc(members, nonmembers), f"{key}_lo": lo, f"{key}_hi": hi}


def write_membership(
    path: Path, sets: dict[str, tuple[list[dict[str, Any]], list[float], list[float]]]
) -> None:
    """One line per record: set (forget/holdout), id and both attack scores."""
    import json

    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for name, (records, mk, mkpp) in sets.items():
            for r, a, b in zip(records, mk, mkpp, strict=True):
                row = {
                    "set": name,
                    "id": str(r["id"]),
                    "subject": subjects([r])[0],
                    "mink": a,
                    "minkpp": b,
                }
                f.write(json.dumps(row) + "\n")


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
    tokens = getattr(params, "mia_tokens", "response")
    tmpl = getattr(params, "template", None)
    forget = _records(world_dir, "forget", limit, ctx.seed)
    if not forget:
        raise ValueError(f"data: {Path(world_dir).name} has no forget.jsonl records")
    retain = _records(world_dir, "retain", limit, ctx.seed)
    holdout = _records(world_dir, "holdout", limit, ctx.seed)
    model.eval()
    seed = rng_seed(ctx.seed, "unlearning")
    out: dict[str, float] = {}
    frac = getattr(params, "verbmem_prefix", 0.5)
    vm = verbmem(model, tokenizer, forget, frac, bs, tmpl)
    out |= mean_with_interval(
        "unlearn/verbmem_forget", vm, seed, False, subjects(forget)
    )
    for split, recs in (("forget", forget), ("retain", retain)):
        rl, em = knowmem(model, tokenizer, recs, bs, tmpl)
        people = subjects(recs)
        out |= mean_with_interval(f"unlearn/knowmem_{split}", rl, seed, False, people)
        out |= mean_with_interval(f"unlearn/em_{split}", em, seed, True, people)
    f_mk, f_pp, f_nll = membership_scores(model, tokenizer, forget, k, bs, tokens, tmpl)
    out |= mean_with_interval(
        "unlearn/nll_forget", f_nll, seed, False, subjects(forget)
    )
    sets = {"forget": (forget, f_mk, f_pp)}
    if holdout:
        h_mk, h_pp, h_nll = membership_scores(
            model, tokenizer, holdout, k, bs, tokens, tmpl
        )
        out |= mean_with_interval(
            "unlearn/nll_holdout", h_nll, seed, False, subjects(holdout)
        )
        people = (subjects(forget), subjects(holdout))
        out |= auc_with_interval("unlearn/mink_auc", f_mk, h_mk, seed, people)
        out |= auc_with_interval("unlearn/minkpp_auc", f_pp, h_pp, seed, people)
        sets["holdout"] = (holdout, h_mk, h_pp)
    if out_dir is not None:
        write_membership(Path(out_dir) / model_files(name)[0], sets)
    return out


Scored = tuple[list[float], list[str]]  # scores and the person of each record


def read_membership(path: Path, attack: str) -> tuple[Scored, Scored] | None:
    """Forget and holdout (scores, people) of one attack from a membership file
    (sorted by id, so two models' files line up), or None when it is missing."""
    import json

    if not path.exists():
        return None
    rows = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x]
    rows.sort(key=lambda r: r["id"])
    forget, holdout = (
        (
            [r[attack] for r in rows if r["set"] == name],
            [str(r.get("subject", r["id"])) for r in rows if r["set"] == name],
        )
        for name in ("forget", "holdout")
    )
    return forget, holdout


def compare(
    results: dict[str, dict[str, float]],
    oracle: str | None,
    out_dir: Path | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """PrivLeak of every model relative to ``oracle`` (MUSE): adds
    ``unlearn/privleak_mink`` and ``unlearn/privleak_minkpp`` in percent, with a
    paired bootstrap interval when both models' membership files are in
    ``out_dir`` (the same resamples of the forget and holdout people for
    both)."""
    import numpy as np

    from stages.evaluate.mia import privleak

    if oracle is None or oracle not in results:
        return results
    ref = results[oracle]
    for name, res in results.items():
        for attack in ATTACKS:
            key = f"unlearn/{attack}_auc"
            if key not in res or key not in ref:
                continue
            out = f"unlearn/privleak_{attack}"
            res[out] = privleak(res[key], ref[key])
            if out_dir is None:
                continue
            files = [Path(out_dir) / model_files(m)[0] for m in (name, oracle)]
            scores = [read_membership(f, attack) for f in files]
            if any(s is None for s in scores):
                continue
            ((fm, gf), (hm, gh)), ((fo, _), (ho, _)) = scores
            if len(fm) != len(fo) or len(hm) != len(ho):
                continue
            boot = bootstrap_aucs(
                [fm, fo], [hm, ho], rng_seed(seed, "privleak", attack), 2000, gf, gh
            )
            with np.errstate(divide="ignore", invalid="ignore"):
                leak = (boot[0] - boot[1]) / boot[1] * 100.0
            res[f"{out}_lo"], res[f"{out}_hi"] = percentile_interval(leak)
    return results
