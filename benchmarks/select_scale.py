"""PASER selection at scale, excluding LM forward passes, against the dense
clustering of the public PASER code (BokwaiHo/PASER, paser.py), in one run.

Pools come from the world generator (``table_scale`` widens its problem spaces
so that 52k and 200k distinct records exist; each pool is trimmed to exactly N
by a seeded sample). The measured unit is the select stage's own ``run()``
(method ``paser``) in a fresh process, with its score caches primed so that no
model forward pass happens inside it:

* sentence embeddings: real all-MiniLM-L6-v2 encodings computed by the stage's
  ``embed()`` beforehand (its throughput is measured and reported separately so
  a user can add it); pools above ``--real-embed-max`` get *synthetic*
  embeddings: a real embedding of a random record of the same family, plus
  isotropic Gaussian jitter of half the median nearest-neighbour distance,
  renormalised (say so in the results);
* JSD scores: synthetic per-family damage × lognormal noise (the JSD model
  passes are measured by benchmarks/select_jsd_throughput.py).

Everything else is timed: reading the pool, cache look-ups, tokenisation (token
counts for IES), kNN graph, diffusion map, NMF clustering, allocation, IES,
concept filter, plots, writing the dataset. Dense = the public code's S2RIC:
N×N distances, affinity, ``inv(D) @ A`` Laplacian, ``eigsh(L, K, 'SM')``, NMF of
|V Vᵀ|; run at small N where its N×N float64 matrices fit, with the same K.

The stage reads the tokenizer and fingerprints of a base and a pruned model:
the default ones in benchmarks/results/assets/, built on first use
(benchmarks/assets.py; ``--base/--prune`` to point elsewhere).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_scale.py \
        --sizes 52000 200000 --dense-sizes 1000 2000 4000 8000

Work folder (pools, caches, selections): benchmarks/results/select_scale/
(``--work``); results: benchmarks/results/select_scale.md and .json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
DENSE_MATRICES = 6  # N×N float64 arrays alive at the dense peak (D, inv(D), A, ...)


def make_pool(n: int, out: Path, table_scale: int, noise: float) -> Path:
    """A world pool of exactly ``n`` records: grow ``pool_size`` until the
    families (some capped by their tables) give >= n, then sample n."""
    import random

    from pipelines.contract import RunContext
    from stages.common.io import read_dataset, write_dataset
    from stages.world import run, synthetic

    if (out / "data.jsonl").exists():
        return out
    ask = n
    for _ in range(5):
        p = synthetic.Params(
            pool_size=ask,
            pretrain_size=10,
            ppl_size=0,
            eval_per_family=1,
            noise=noise,
            table_scale=table_scale,
        )
        w = out / "world"
        if w.exists():
            import shutil

            shutil.rmtree(w)
        w.mkdir(parents=True)
        run(p, {}, w, RunContext(seed=0))
        counts = {
            f: c["counts"]["pool"]
            for f, c in json.loads((w / "world.json").read_text())["families"].items()
        }
        if sum(counts.values()) >= n:
            break
        quota = ask // len(counts)  # shares differ by one at most
        capped = {f: c for f, c in counts.items() if c < quota}
        free = len(counts) - len(capped)
        if not free:
            raise RuntimeError(f"table_scale {table_scale} cannot give {n} records")
        need = math.ceil((n - sum(capped.values())) / free * 1.02)
        ask = need * len(counts)
    else:
        raise RuntimeError(f"world pool stayed below {n} records; raise --table-scale")
    recs = read_dataset(w)
    keep = sorted(random.Random(0).sample(range(len(recs)), n))
    write_dataset([recs[i] for i in keep], out, source=f"world pool_size={ask}")
    return out


def subset_pool(src: Path, n: int, out: Path) -> Path:
    import random

    from stages.common.io import read_dataset, write_dataset

    if not (out / "data.jsonl").exists():
        recs = read_dataset(src)
        keep = sorted(random.Random(n).sample(range(len(recs)), n))
        write_dataset([recs[i] for i in keep], out, source=f"{src.name} sample")
    return out


def real_embeddings(pool: list, cache: Path) -> tuple[Any, dict[str, float]]:
    """The stage's own embed() (MiniLM forward passes), timed."""
    from pipelines.contract import RunContext
    from stages.select.scoring import embed

    t = time.perf_counter()
    emb, new = embed(pool, cache, RunContext(name="embed"))
    s = time.perf_counter() - t
    info = {"records": len(pool), "encoded": new, "seconds": s}
    if new:
        info["records_per_s"] = new / s
    return emb, info


def synthetic_embeddings(pool: list, ref_pool: list, ref_emb: Any, seed: int = 0):
    """Real embeddings of same-family records + jitter of half the median
    nearest-neighbour distance of the real set (see the module docstring)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    sample = ref_emb[rng.choice(len(ref_emb), min(2000, len(ref_emb)), replace=False)]
    # |a|² + |b|² - 2ab: (n, n), not the (n, n, D) broadcast (6 GB at n = 2000,
    # which a spawned stage process would inherit as its peak RSS)
    sq = (sample**2).sum(1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * sample @ sample.T, 0)
    np.fill_diagonal(d2, np.inf)
    nn = float(np.median(np.sqrt(d2.min(1))))
    by_fam: dict[str, Any] = {}
    for i, r in enumerate(ref_pool):
        by_fam.setdefault(r["family"], []).append(i)
    src = np.array([rng.choice(by_fam[r["family"]]) for r in pool])
    dim = ref_emb.shape[1]
    jitter = rng.normal(scale=0.5 * nn / math.sqrt(dim), size=(len(pool), dim))
    emb = ref_emb[src] + jitter.astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    return emb.astype(np.float32), {"median_nn_distance": nn, "jitter": 0.5 * nn}


def synthetic_jsd(pool: list, seed: int = 0) -> Any:
    import numpy as np

    rng = np.random.default_rng(seed)
    fams = sorted({r["family"] for r in pool})
    damage = dict(zip(fams, rng.uniform(0.02, 0.3, len(fams)), strict=True))
    base = np.array([damage[r["family"]] for r in pool])
    return np.clip(base * rng.lognormal(0, 0.5, len(pool)), 0, 0.69)


def synthetic_pair(pool: list, seed: int = 0) -> Any:
    """(JSD, NLL original, NLL pruned) per record for ``mode: carp``: the
    synthetic JSD; an original-model answer loss that is low for clean and
    high for corrupted records; the pruned loss above it by the damage."""
    import numpy as np

    rng = np.random.default_rng(seed + 1)
    jsd = synthetic_jsd(pool, seed)
    bad = np.array([bool(r.get("corrupted")) for r in pool])
    nll_o = np.where(bad, 4.0, 0.05) * rng.lognormal(0, 0.5, len(pool))
    return np.stack([jsd, nll_o, nll_o + 5 * jsd], axis=1)


def prime_caches(pool: list, emb: Any, ck: Path, models: dict[str, Path]) -> None:
    """Write the stage's embedding, JSD and paired-score caches for ``pool``
    into ``ck`` (the stage's shared ``select-scores`` folder)."""
    from stages.select.cache import ScoreCache, fingerprint, record_key
    from stages.select.scoring import embed_text, encoder_path, lm_key

    if ck.exists():
        return
    enc = ScoreCache(ck / f"embed-{fingerprint(Path(encoder_path(None)))}", 384)
    enc.add([record_key(r, embed_text(r)) for r in pool], emb)
    name = f"jsd-{fingerprint(models['base'])}-{fingerprint(models['prune'])}-len256"
    keys = [lm_key(r) for r in pool]
    ScoreCache(ck / name, 1).add(keys, synthetic_jsd(pool)[:, None])
    ScoreCache(ck / name.replace("jsd-", "pair-", 1), 3).add(keys, synthetic_pair(pool))


def stage_job(
    pool_dir: str,
    ck: str,
    out: str,
    budget: float,
    knn_dim: int,
    models: dict[str, Path],
    mode: str,
    knn: str,
    q,
):
    """The select stage's run() (paser) with primed caches; ARI from its labels."""
    import numpy as np

    from pipelines.contract import RunContext
    from stages import select
    from stages.select import paser

    captured: dict[str, Any] = {}
    inner = paser.cluster_pool

    def spy(params: Any, emb: Any, seed: int, pool: Any = None) -> dict[str, Any]:
        captured.update(inner(params, emb, seed, pool))
        return captured

    paser.cluster_pool = spy  # the stage looks it up by name: labels for the ARI
    p = paser.Params(
        pool="pool",
        model="prune",
        reference="base",
        budget=budget,
        knn_dim=knn_dim,
        mode=mode,
        knn=knn,
    )
    inputs = {
        "pool": Path(pool_dir),
        "model": models["prune"],
        "reference": models["base"],
    }
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t = time.perf_counter()
    res = select.run(
        p, inputs, Path(out), RunContext(checkpoint_dir=Path(ck).parent / "sel")
    )
    total = time.perf_counter() - t
    rep = json.loads((Path(out) / "selection.json").read_text())
    if rep["computed"] != {"embeddings": 0, "jsd": 0}:
        raise RuntimeError(
            f"forward passes ran inside the timed stage: {rep['computed']}"
        )
    from sklearn.metrics import adjusted_rand_score

    from stages.common.io import read_dataset

    fam = [r["family"] for r in read_dataset(Path(pool_dir))]
    np.save(Path(out) / "labels.npy", np.asarray(captured["labels"]))
    q.put(
        {
            "n": rep["pool_size"],
            "k": rep["k"],
            "stage_s": total,
            "phases_s": rep["seconds"],
            "selected": rep["selected"],
            "filter_rejected": rep["filter_rejected_total"],
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_before_gb": rss0 / 2**20,
            "mode": mode,
            "knn": rep.get("knn", {}),
            "noise_flagged": rep.get("noise_flagged"),
            "corrupted_selected": rep["corrupted_selected"],
            "ari_vs_family": float(
                adjusted_rand_score(fam, np.asarray(captured["labels"]))
            ),
            "metrics_seconds": res.metrics["seconds"],
        }
    )


def knn_compare(main: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """A baseline kNN backend's run against the reported one: its clustering
    time over the reported run's, and the ARI between the two label sets."""
    import numpy as np
    from sklearn.metrics import adjusted_rand_score

    if "phases_s" not in main or "phases_s" not in other:
        return {k: v for k, v in other.items() if k in ("skipped", "error")}
    la, lb = (np.load(r["labels"]) for r in (main, other))
    return {
        "backend": other["knn"].get("backend"),
        "cluster_s": other["phases_s"]["cluster"],
        "cluster_time_ratio": other["phases_s"]["cluster"]
        / main["phases_s"]["cluster"],
        "ari_between_labels": float(adjusted_rand_score(la, lb)),
        "k": other["k"],
        "peak_rss_gb": other["peak_rss_gb"],
    }


def dense_job(pool_dir: str, ck: str, k: int, q) -> None:
    """The public code's S2RIC, line for line (N×N everywhere), same embeddings."""
    import numpy as np
    from scipy.sparse.linalg import eigsh
    from sklearn.decomposition import NMF
    from sklearn.metrics import adjusted_rand_score, pairwise_distances

    from pipelines.contract import RunContext
    from stages.common.io import read_dataset
    from stages.select.scoring import embed

    pool = read_dataset(Path(pool_dir))
    emb, new = embed(pool, Path(ck), RunContext())
    if new:
        raise RuntimeError("dense job: embeddings were not cached")
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    distances = pairwise_distances(emb)
    sigma = np.median(distances)
    a = np.exp(-(distances**2) / (2 * sigma**2))
    d = np.diag(np.sum(a, axis=1))
    lap = np.eye(len(emb)) - np.linalg.inv(d) @ a
    _, v = eigsh(lap, k=k, which="SM")
    s = np.abs(np.dot(v, v.T))
    w = NMF(n_components=k, init="random", random_state=0).fit_transform(s)
    labels = np.argmax(w, axis=1)
    q.put(
        {
            "n": len(pool),
            "cluster_s": time.perf_counter() - t0,
            "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
            "rss_before_gb": rss0 / 2**20,
            "ari_vs_family": float(
                adjusted_rand_score([r["family"] for r in pool], labels)
            ),
        }
    )


def measure(target, *args, timeout: float) -> dict:
    """Run ``target`` in a fresh spawned process (own peak RSS), with a timeout."""
    import psutil

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    t = time.perf_counter()
    p.start()
    peak = 0
    while p.is_alive() and time.perf_counter() - t < timeout:
        # sampled: the child's ru_maxrss starts at the parent's size (fork + exec)
        with contextlib.suppress(psutil.Error):
            peak = max(peak, psutil.Process(p.pid).memory_info().rss)
        p.join(0.5)
        if not q.empty():
            break
    out = q.get() if not q.empty() else None
    if p.is_alive() and out is None:
        p.kill()
        return {"error": f"timeout {timeout:.0f}s", "sampled_peak_rss_gb": peak / 2**30}
    p.join()
    if out is None:
        return {"error": f"exit code {p.exitcode}"}
    return {**out, "sampled_peak_rss_gb": peak / 2**30}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[52000, 200000])
    ap.add_argument(
        "--dense-sizes", type=int, nargs="*", default=[1000, 2000, 4000, 8000]
    )
    ap.add_argument("--table-scale", type=int, default=4)
    ap.add_argument("--noise", type=float, default=0.05)
    ap.add_argument("--budget", type=float, default=0.2)
    ap.add_argument("--knn-dim", type=int, default=64)
    ap.add_argument(
        "--mode",
        choices=["faithful", "carp"],
        default="faithful",
        help="PASER mode of the timed stage (carp: paired scores, noise filter)",
    )
    ap.add_argument(
        "--knn",
        nargs="+",
        default=["auto", "exact"],
        choices=["auto", "exact", "nndescent"],
        help="kNN backends: the first is the reported run, the others its "
        "baseline on the same pool (clustering time ratio, ARI between labels)",
    )
    ap.add_argument(
        "--exact-max",
        type=int,
        default=250000,
        help="skip baseline runs of the exact kNN above this many records",
    )
    ap.add_argument("--real-embed-max", type=int, default=60000)
    ap.add_argument("--dense-max-gb", type=float, default=8.0)
    ap.add_argument("--timeout", type=float, default=1500)
    ap.add_argument("--dense-timeout", type=float, default=600)
    ap.add_argument("--work", type=Path, default=RESULTS / "select_scale")
    for name in ("base", "prune"):
        ap.add_argument(
            f"--{name}",
            type=Path,
            help=f"{name} model folder (default: benchmarks/results/assets/{name},"
            " built when missing)",
        )
    a = ap.parse_args()
    if not (a.base and a.prune):
        from benchmarks.assets import default_assets

        built = default_assets()
        a.base, a.prune = a.base or built["base"], a.prune or built["prune"]
    models = {"base": a.base, "prune": a.prune}
    import psutil

    from stages.common.io import read_dataset

    ram = psutil.virtual_memory().total / 2**30
    pools = {
        n: make_pool(n, a.work / f"pool{n}", a.table_scale, a.noise) for n in a.sizes
    }
    ref_n = min(a.sizes)
    ref_pool = read_dataset(pools[ref_n])
    ref_emb, embed_info = real_embeddings(ref_pool, a.work / "embed_cache")
    measured = a.work / "minilm.json"  # the throughput of the run that encoded
    if embed_info["encoded"]:
        measured.write_text(json.dumps(embed_info))
    elif measured.exists():
        embed_info = json.loads(measured.read_text())
    print("MiniLM:", json.dumps(embed_info), flush=True)
    for n in a.dense_sizes:
        pools[n] = subset_pool(pools[ref_n], n, a.work / f"pool{n}")
    rows, coef = [], None
    for n in sorted(pools):
        pool = read_dataset(pools[n])
        if n <= a.real_embed_max:
            emb, info = real_embeddings(pool, a.work / "embed_cache")
            kind = "real MiniLM"
        else:
            emb, info = synthetic_embeddings(pool, ref_pool, ref_emb)
            kind = "synthetic (jittered real, same family)"
        ck = a.work / f"ck{n}" / "select-scores"  # the stage's shared cache
        prime_caches(pool, emb, ck, models)
        del emb
        fams: dict[str, int] = {}
        for r in pool:
            fams[r["family"]] = fams.get(r["family"], 0) + 1
        row: dict[str, Any] = {"n": n, "embeddings": kind, "families": fams}
        runs = {}
        for b in a.knn:
            if b != a.knn[0] and b == "exact" and n > a.exact_max:
                runs[b] = {"skipped": f"exact kNN above --exact-max {a.exact_max}"}
                continue
            out = a.work / f"sel{n}-{b}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            out.mkdir()
            runs[b] = measure(
                stage_job,
                str(pools[n]),
                str(ck),
                str(out),
                a.budget,
                a.knn_dim,
                models,
                a.mode,
                b,
                timeout=a.timeout,
            )
            runs[b]["labels"] = str(out / "labels.npy")
        row["sparse"] = runs[a.knn[0]]
        row["knn_baselines"] = {
            b: knn_compare(runs[a.knn[0]], r) for b, r in runs.items() if b != a.knn[0]
        }
        need = DENSE_MATRICES * 8 * n**2 / 2**30
        if coef is not None:
            need = coef * n**2 / 2**30
        row["dense_need_gb"] = need
        if n in a.dense_sizes and need <= a.dense_max_gb:
            k = row["sparse"].get("k", 10)
            row["dense"] = measure(
                dense_job, str(pools[n]), str(ck), k, timeout=a.dense_timeout
            )
            d, s = row["dense"], row["sparse"]
            if "cluster_s" in d and "phases_s" in s:
                row["dense_over_sparse_cluster"] = (
                    d["cluster_s"] / s["phases_s"]["cluster"]
                )
                coef = (d["peak_rss_gb"] - d["rss_before_gb"]) * 2**30 / n**2
        else:
            row["dense"] = {
                "skipped": f"needs ~{need:.0f} GB of N×N float64 "
                f"(machine {ram:.0f} GB, limit {a.dense_max_gb:.0f} GB)"
            }
        print(json.dumps(row), flush=True)
        rows.append(row)
    result = {
        "args": {k: str(v) for k, v in vars(a).items()},
        "machine_ram_gb": ram,
        "minilm": embed_info,
        "dense_bytes_per_n2": coef,
        "rows": rows,
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "select_scale.json").write_text(json.dumps(result, indent=2))
    (RESULTS / "select_scale.md").write_text(markdown(result))
    print(markdown(result))


def markdown(res: dict[str, Any]) -> str:
    """The results table (one row per N) and the notes it needs."""
    rows = res["rows"]
    dense_pts = [
        (r["n"], r["dense"]["cluster_s"]) for r in rows if "cluster_s" in r["dense"]
    ]
    lines = [
        "# PASER selection at scale (select stage run(), no LM forward passes)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_scale.py "
        f"--sizes {res['args']['sizes']} --dense-sizes {res['args']['dense_sizes']} "
        f"--mode {res['args']['mode']} --knn {res['args']['knn']}`"
        " (one thread). Budget 20%, knn_dim "
        f"{res['args']['knn_dim']}, K by eigengap.",
        "",
        "| N | embeddings | kNN (sampled recall) | stage total s | of which "
        "clustering s | peak RSS GB (sampled every 0.5 s) | baseline kNN: clustering s "
        "(÷ reported), ARI vs reported labels | dense clustering s | dense peak "
        "RSS GB | dense/sparse clustering time | K | ARI vs family "
        "(sparse / dense) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, d = r["sparse"], r["dense"]
        if "error" in s:
            lines.append(
                f"| {r['n']} | {r['embeddings']} | | {s['error']} | | | | | | | | |"
            )
            continue
        if "cluster_s" in d:
            dt, dr = f"{d['cluster_s']:.1f}", f"{d['peak_rss_gb']:.2f}"
            ratio = f"{r['dense_over_sparse_cluster']:.2f}"
            dari = f"{d['ari_vs_family']:.3f}"
        else:
            dt, dr, ratio, dari = d.get("skipped", d.get("error", "")), "", "", "–"
        knn = s.get("knn", {})
        kcell = knn.get("backend", "exact")
        if "recall_sample" in knn:
            kcell += f" ({knn['recall_sample']:.3f})"
        base = []
        for b, c in r.get("knn_baselines", {}).items():
            if "cluster_s" in c:
                base.append(
                    f"{b}: {c['cluster_s']:.1f} ({c['cluster_time_ratio']:.2f}×), "
                    f"ARI {c['ari_between_labels']:.3f}"
                )
            else:
                base.append(f"{b}: {c.get('skipped', c.get('error', ''))}")
        lines.append(
            f"| {r['n']:,} | {r['embeddings']} | {kcell} | {s['stage_s']:.1f} | "
            f"{s['phases_s']['cluster']:.1f} | "
            f"{s.get('sampled_peak_rss_gb', float('nan')):.2f} | "
            f"{'; '.join(base) or '–'} | {dt} | {dr} | "
            f"{ratio} | {s['k']} | "
            f"{s['ari_vs_family']:.3f} / {dari} |"
        )
    m = res["minilm"]
    lines += [
        "",
        "Excluded (model forward passes): the sentence encoder (all-MiniLM-L6-v2) "
        "and the two LMs' JSD passes. The stage ran with its score caches primed "
        "and checked that it computed 0 embeddings and 0 JSD scores itself. "
        "JSD scores are synthetic (per-family damage × lognormal noise); "
        "their real throughput is in select_jsd_throughput.md.",
        "",
        f"MiniLM encoding throughput (the stage's embed(), batch 64, 1 thread): "
        f"{m.get('records_per_s', float('nan')):.0f} records/s "
        f"({m.get('encoded', 0)} records in {m['seconds']:.0f} s); add "
        "N / that rate to the stage time for an uncached pool.",
        "",
        "Embeddings: 'real MiniLM' = the stage's own encodings of the pool's "
        "records; 'synthetic' = for each record, the real embedding of a random "
        "record of the same family in the smallest pool plus isotropic Gaussian "
        "jitter (half the median nearest-neighbour distance), renormalised.",
        "",
        "Peak RSS is the whole process (python + torch + sklearn imports ≈ the "
        "'before run' value). Dense = the public PASER code's clustering "
        "(N×N distances, affinity, inv(D)@A, eigsh 'SM', NMF of |VVᵀ|) on the "
        "same embeddings with the same K; ratio = dense clustering time / the "
        "stage's clustering phase.",
    ]
    coef = res.get("dense_bytes_per_n2")
    if coef and dense_pts:
        fit = math.sqrt(res["machine_ram_gb"] * 2**30 / coef)
        n0, t0 = dense_pts[-1]
        lines += [
            "",
            f"Where dense stops fitting: measured {coef:.0f} bytes per N² at the "
            f"dense peak, so dense needs {coef * 52000**2 / 2**30:.0f} GB at 52k "
            f"and {coef * 200000**2 / 2**30:.0f} GB at 200k; this "
            f"{res['machine_ram_gb']:.0f} GB machine fits N ≲ {fit:,.0f}. "
            f"Extrapolating its O(N³) inverse/product from N={n0:,} "
            f"({t0:.0f} s): ~{t0 * (52000 / n0) ** 3 / 3600:.1f} h at 52k "
            "(not measured).",
        ]
    fam = rows[-1]["families"]
    lines += [
        "",
        f"Pool composition at N={rows[-1]['n']:,}: "
        + ", ".join(f"{k} {v}" for k, v in sorted(fam.items())),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
