"""Perplexity baseline: records the pruned model finds hardest first (highest
mean response NLL), as in loss-based data selection (e.g. Marion et al. 2023).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pipelines.contract import RunContext
from stages.select import Selection, cache_root
from stages.select.lmparams import LMParams


class Params(LMParams):
    method: Literal["perplexity"] = "perplexity"


def select(
    params: Params,
    pool: list[dict[str, Any]],
    n: int,
    inputs: dict[str, Path],
    out_dir: Path,
    ctx: RunContext,
    seed: int,
) -> Selection:
    """Top ``n`` records by the pruned model's response NLL (ties: pool order)."""
    import numpy as np

    root = cache_root(out_dir, ctx)
    nll, new = nll_scores(params, Path(inputs["model"]), pool, root, ctx)
    order = np.lexsort((np.arange(len(pool)), -nll))[:n]
    report = {
        "nll_pool_mean": float(nll.mean()),
        "nll_selected_mean": float(nll[order].mean()),
        "computed": {"nll": new},
        "cache": str(root),
    }
    return Selection(
        [int(i) for i in order], report, {"nll_selected_mean": float(nll[order].mean())}
    )


def nll_scores(
    params: LMParams,
    model_dir: Path,
    pool: list[dict[str, Any]],
    root: Path,
    ctx: RunContext,
    response_only: bool = False,
) -> tuple[Any, int]:
    """Per-record mean response NLL under the model in ``model_dir`` (cached).

    ``response_only``: the response scored without its prompt (BOS + response
    + EOS), IFD's unconditional loss; otherwise the shared template encoding.
    """
    from stages.common.io import load_tokenizer
    from stages.select.cache import ScoreCache, fingerprint
    from stages.select.kernels import response_nll
    from stages.select.scoring import (
        encode_records,
        lm_key,
        load_lm,
        pick_device,
        record_scores,
        response_logits,
    )

    tok = load_tokenizer(model_dir)
    kind = "nll-resp" if response_only else "nll"
    name = f"{kind}-{fingerprint(model_dir)}-len{params.max_len}"
    keys = [lm_key(r, params.template) for r in pool]
    cached, missing = ScoreCache(root / name, 1).lookup(keys)
    if not missing:
        return cached[:, 0], 0
    if response_only:
        enc = [_response_only(tok, r, params.max_len, params.template) for r in pool]
    else:
        enc = encode_records(tok, pool, params.max_len, params.template)
    device = pick_device(params.device)
    model = load_lm(model_dir, device, params.dtype)

    def fn(batch: dict[str, Any]) -> Any:
        return response_nll(*response_logits(model, batch))

    vals, new = record_scores(name, enc, keys, root, fn, ctx, tok, params, device)
    return vals, new


def _response_only(
    tokenizer: Any, rec: dict[str, Any], max_len: int, template: str | None = None
) -> tuple[list[int], list[int]]:
    """BOS + response + EOS with every response token a label (the template's
    response text, tokenised on its own as ``encode_example`` does)."""
    from stages.common.templates import get_template
    from stages.common.text import IGNORE_INDEX

    text = get_template(template).response_text(rec)
    resp = tokenizer(text, add_special_tokens=False)["input_ids"]
    bos = [tokenizer.bos_token_id] if tokenizer.bos_token_id is not None else []
    resp = (resp + [tokenizer.eos_token_id])[: max_len - len(bos)]
    if not bos:  # the first token has no prediction; keep it as context only
        return resp, [IGNORE_INDEX] + resp[1:]
    return bos + resp, [IGNORE_INDEX] + resp
