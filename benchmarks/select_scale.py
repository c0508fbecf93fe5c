"""PASER selection at scale, excluding LM forward passes (sentence encoder and
JSD scoring), against the dense clustering of the public PASER code.

Pools come from the world generator (or --pool JSONL). Embeddings are synthetic
per-family Gaussians fitted to real all-MiniLM-L6-v2 embeddings of a sample of
the pool (encoding 200k records is an LM forward pass, excluded here); JSD
scores are synthetic per-family damage. Everything else -- kNN graph, diffusion
map, NMF clustering, allocation, IES, concept filter, writing the dataset -- is
the stage's own code. Each measurement runs in a fresh process (peak RSS).

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/select_scale.py \
        --sizes 52000 200000 --dense-sizes 1000 2000 4000
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def make_pool(n: int, out: Path, noise: float = 0.05) -> Path:
    from pipelines.contract import RunContext
    from stages.common.io import read_dataset, write_dataset
    from stages.world import run, synthetic

    if (out / "data.jsonl").exists():
        return out
    ask = n
    while True:  # closed families run out of phrasings: ask for more, then trim
        p = synthetic.Params(pool_size=ask, pretrain_size=10, ppl_size=0, noise=noise)
        run(p, {}, out / f"world{ask}", RunContext(seed=0))
        recs = read_dataset(out / f"world{ask}")
        if len(recs) >= n:
            break
        ask = int(ask * n / len(recs) * 1.05) + 1
    import random

    keep = sorted(random.Random(0).sample(range(len(recs)), n))
    write_dataset([recs[i] for i in keep], out, source=f"world pool_size={ask}")
    return out


def synth_inputs(pool: list, seed: int = 0, sample: int = 30):
    """Per-family Gaussian embeddings fitted to real encodings of ``sample``
    records per family; per-family synthetic JSD and real token-ish counts."""
    import numpy as np

    from stages.select.scoring import embed_text, encoder_path

    rng = np.random.default_rng(seed)
    fams = sorted({r["family"] for r in pool})
    fam_idx = np.array([fams.index(r["family"]) for r in pool])
    from sentence_transformers import SentenceTransformer

    enc = SentenceTransformer(encoder_path(None), device="cpu", local_files_only=True)
    emb = np.empty((len(pool), 384), np.float32)
    for f in range(len(fams)):
        idx = np.flatnonzero(fam_idx == f)
        pick = rng.choice(idx, min(sample, len(idx)), replace=False)
        real = enc.encode(
            [embed_text(pool[i]) for i in pick], normalize_embeddings=True
        )
        mu, sd = real.mean(0), real.std(0) + 1e-4
        emb[idx] = mu + sd * rng.normal(size=(len(idx), 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    damage = rng.uniform(0.02, 0.3, len(fams))
    jsd = np.clip(damage[fam_idx] * rng.lognormal(0, 0.5, len(pool)), 0, 0.69)
    ntok = np.array(
        [len(r["instruction"]) + len(r.get("input") or "") + 8 for r in pool]
    )
    return emb, jsd, ntok, fam_idx


def sparse_job(pool_dir: str, budget: float, q) -> None:
    import torch

    torch.set_num_threads(2)
    from stages.common.io import read_dataset, write_dataset
    from stages.select.paser import Params, allocate_and_fill, cluster_pool

    pool = read_dataset(Path(pool_dir))
    emb, jsd, ntok, fam = synth_inputs(pool)
    p = Params(pool="w", model="m", reference="r", budget=budget, knn_dim=64)
    n = int(budget * len(pool))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    clus = cluster_pool(p, emb, 0)
    t1 = time.perf_counter()
    res, k, *_ = allocate_and_fill(p, pool, clus["labels"], jsd, ntok, n)
    write_dataset([pool[i] for i in sorted(res.selected)], Path(pool_dir) / "sel", "w")
    t2 = time.perf_counter()
    from sklearn.metrics import adjusted_rand_score

    q.put(
        {
            "n": len(pool),
            "k": k,
            "cluster_s": t1 - t0,
            "fill_s": t2 - t1,
            "total_s": t2 - t0,
            "selected": len(res.selected),
            "rejected": int(sum(res.rejected)),
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_before_gb": rss0 / 2**20,
            "ari_vs_family": float(adjusted_rand_score(fam, clus["labels"])),
            "embeddings_mb": emb.nbytes / 2**20,
            "rule": clus["rule"],
        }
    )


def dense_job(pool_dir: str, k: int, q) -> None:
    """The public code's S2RIC: dense distances, affinity, Laplacian, eigsh,
    NMF on |V Vᵀ| (N×N everywhere)."""
    import numpy as np
    from scipy.sparse.linalg import eigsh
    from sklearn.decomposition import NMF
    from sklearn.metrics import adjusted_rand_score, pairwise_distances

    from stages.common.io import read_dataset

    pool = read_dataset(Path(pool_dir))
    emb, _, _, fam = synth_inputs(pool)
    t0 = time.perf_counter()
    d = pairwise_distances(emb)
    sigma = np.median(d)
    a = np.exp(-(d**2) / (2 * sigma**2))
    del d
    lap = np.eye(len(emb)) - np.diag(1 / a.sum(1)) @ a
    _, v = eigsh(lap, k=k, which="SM")
    s = np.abs(v @ v.T)
    w = NMF(k, init="random", random_state=0).fit_transform(s)
    labels = w.argmax(1)
    q.put(
        {
            "n": len(pool),
            "total_s": time.perf_counter() - t0,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "ari_vs_family": float(adjusted_rand_score(fam, labels)),
        }
    )


def measure(target, *args, timeout: float = 1800) -> dict:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    p.join(timeout)
    if p.is_alive():
        p.kill()
        return {"error": f"timeout {timeout}s"}
    return q.get() if not q.empty() else {"error": f"exit code {p.exitcode}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[52000, 200000])
    ap.add_argument("--dense-sizes", type=int, nargs="+", default=[1000, 2000, 4000])
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/carp_select_scale"))
    a = ap.parse_args()
    import psutil

    rows = []
    for n in sorted(set(a.sizes + a.dense_sizes)):
        pool = make_pool(n, a.work / f"pool{n}")
        from stages.common.io import read_dataset

        real_n = len(read_dataset(pool))
        row = {"requested": n, "pool": real_n}
        if n in a.sizes or n in a.dense_sizes:
            row["sparse"] = measure(sparse_job, str(pool), a.budget)
        if n in a.dense_sizes:
            need = 5 * 8 * real_n**2 / 2**30  # five float64 N×N matrices
            if need > 0.8 * psutil.virtual_memory().total / 2**30:
                row["dense"] = {"skipped": f"needs ~{need:.0f} GB"}
            else:
                k = row["sparse"].get("k", 10)
                row["dense"] = measure(dense_job, str(pool), k)
                if "total_s" in row["dense"] and "total_s" in row["sparse"]:
                    row["dense_over_sparse_time"] = (
                        row["dense"]["total_s"] / row["sparse"]["total_s"]
                    )
        print(json.dumps(row), flush=True)
        rows.append(row)
    total = psutil.virtual_memory().total / 2**30
    for n in a.sizes:
        need = 5 * 8 * n**2 / 2**30
        fits = "fits" if need < total else "does not fit"
        print(
            f"dense at N={n}: ~{need:.0f} GB of N×N float64 (have {total:.0f}): {fits}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "select_scale.json").write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
