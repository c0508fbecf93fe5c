"""A cheap generation check of pruning damage: greedy answers of the
original and the pruned model on a seeded sample of each cluster, scored by
exact match against the records' reference answers. A cluster's generation
damage is the share of its sample the original answers right and the pruned
model does not, net of the reverse (EM original − EM pruned); it measures the
capability loss directly instead of a proxy on teacher-forced tokens.

``sample_per_cluster`` and ``scale_to_clusters`` are pure; ``generation_hits``
runs the two models (cached per record and model pair, like the JSD scores).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def sample_per_cluster(labels: np.ndarray, m: int, seed: int) -> np.ndarray:
    """Sorted indices of up to ``m`` records per cluster, drawn without
    replacement by a generator seeded with ``seed`` (a cluster smaller than
    ``m`` is taken whole)."""
    rng = np.random.default_rng(seed)
    out = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        take = min(m, len(members))
        out.append(rng.choice(members, take, replace=False))
    return np.sort(np.concatenate(out)) if out else np.zeros(0, dtype=np.int64)


def cluster_damage(hits: np.ndarray, labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """EM original − EM pruned per cluster from the sample's hits (S, 2) =
    (original right, pruned right) and the sample's labels (S,); NaN for a
    cluster without sampled records."""
    out = np.full(n_clusters, np.nan)
    for c in range(n_clusters):
        m = labels == c
        if m.any():
            out[c] = float(hits[m, 0].mean() - hits[m, 1].mean())
    return out


def scale_to_clusters(
    record_scores: np.ndarray, labels: np.ndarray, damage: np.ndarray
) -> np.ndarray:
    """Per-record scores whose cluster means equal the clusters' generation
    damage (clipped at 0), ordered inside each cluster as ``record_scores``:
    s_i · max(0, g_c) / mean_c(s); a cluster whose scores are all 0 gives each
    record g_c. So CDS_k = g_k and |C_k|·CDS_k = |C_k|·g_k, while IES still
    ranks records within a cluster by their own damage."""
    s = np.maximum(np.asarray(record_scores, dtype=np.float64), 0.0)
    g = np.nan_to_num(np.maximum(np.asarray(damage, dtype=np.float64), 0.0))
    out = np.zeros_like(s)
    for c in np.unique(labels):
        m = labels == c
        mean = s[m].mean()
        out[m] = s[m] * g[c] / mean if mean > 0 else g[c]
    return out


def generation_hits(
    params: Any,
    pool: list[dict[str, Any]],
    idx: np.ndarray,
    inputs: dict[str, Path],
    root: Path,
    ctx: Any,
    device: str,
) -> tuple[np.ndarray, int]:
    """(len(idx), 2) exact-match hits of the original and the pruned model's
    greedy answers to ``pool[idx]``, and how many records were generated now
    (the rest come from the cache ``gen-<original>-<pruned>``)."""
    from stages.common.io import load_tokenizer
    from stages.common.templates import DEFAULT_TEMPLATE, as_instruction
    from stages.evaluate.exact_match import answer_budget
    from stages.evaluate.generation import greedy_generate
    from stages.evaluate.scoring import exact_match
    from stages.select.cache import ScoreCache, fingerprint
    from stages.select.scoring import lm_key, load_lm

    recs = [pool[i] for i in idx]
    mp, mo = Path(inputs["model"]), Path(inputs["reference"])
    cache = ScoreCache(root / f"gen-{fingerprint(mo)}-{fingerprint(mp)}", 2)
    keys = [lm_key(r, params.template) for r in recs]
    vals, missing = cache.lookup(keys)
    if missing:
        tok = load_tokenizer(mp)
        todo = [recs[i] for i in missing]
        budget = answer_budget(tok, todo, params.template)
        # named only when not carp: a caller may stand in a narrower
        # greedy_generate (tests fake generation)
        carp = params.template in (None, DEFAULT_TEMPLATE)
        tmpl = {} if carp else {"template": params.template}
        cols = []
        for path in (mo, mp):
            model = load_lm(path, device, params.dtype)
            preds = greedy_generate(
                model, tok, todo, budget, params.max_batch, ctx.progress, **tmpl
            )
            refs = [as_instruction(r)["output"] for r in todo]
            cols.append([exact_match(p, a) for p, a in zip(preds, refs)])  # noqa: B905
            del model
        new = np.asarray(cols, dtype=np.float32).T
        cache.add([keys[i] for i in missing], new)
        vals[missing] = new
    return vals.astype(np.float64), len(missing)
