"""Recovery quality by selection method on the embedded default world:
PASER vs random vs perplexity vs IFD vs the full pool, at budgets 10% and 20%,
over seeds (mean ± std of per-family exact match and perplexity), the adjusted
Rand index of PASER's clusters against the world's families, and, on a noisy
pool, the corrupted records each method selects and the concept filter's
precision on them. Runs the stages' own run() functions in a work folder.

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/select_quality.py \
        --seeds 0 1 2 --budgets 0.1 0.2 --noise 0.1
    (--micro: a seconds-long smoke run of the whole script)
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("paser", "random", "perplexity", "ifd", "full")


def stage(
    kind: str,
    params: dict[str, Any],
    inputs: dict[str, Any],
    out: Path,
    seed: int,
    ck: Path,
) -> dict[str, float]:
    """Run one stage through its kind's run(), reusing a finished output."""
    from pipelines.contract import RunContext

    done = out / "metrics.bench.json"
    if done.exists():
        return json.loads(done.read_text())
    mod = importlib.import_module(
        f"stages.{kind}" if kind != "pretrain" else "stages.world.pretrain"
    )
    method = params.get("method") or mod.DEFAULT_METHOD
    cls = mod.METHODS.load(method).Params if method else mod.Params
    p = cls(**{**params, **({"method": method} if method else {})})
    out.mkdir(parents=True, exist_ok=True)  # the engine hands stages a made folder
    res = mod.run(
        p, inputs, out, RunContext(seed=seed, checkpoint_dir=ck, name=out.name)
    )
    done.write_text(json.dumps(res.metrics))
    return res.metrics


def summarise(metrics: dict[str, float]) -> dict[str, float]:
    """Mean per-family exact match (``<model>/em/<family>``) and perplexity
    (``<model>/ppl``) from the evaluate stage's metrics."""
    em = [v for k, v in metrics.items() if "/em/" in k and not k.endswith("/mean")]
    ppl = [v for k, v in metrics.items() if k.endswith("/ppl")]
    return {
        "exact_match": statistics.fmean(em) if em else float("nan"),
        "perplexity": statistics.fmean(ppl) if ppl else float("nan"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--noise", type=float, default=0.0)
    ap.add_argument("--pool-size", type=int, default=3000)
    ap.add_argument("--pretrain-steps", type=int, default=1500)
    ap.add_argument("--sparsity", type=float, default=0.5)
    ap.add_argument("--epochs", type=float, default=3.0)
    ap.add_argument("--micro", action="store_true")
    ap.add_argument("--work", type=Path, default=Path("/tmp/carp_select_quality"))
    a = ap.parse_args()
    world_p = {"pool_size": a.pool_size, "noise": a.noise}
    base_p: dict[str, Any] = {"steps": a.pretrain_steps}
    rec_p: dict[str, Any] = {"method": "full", "epochs": a.epochs}
    eval_p: dict[str, Any] = {}
    if a.micro:
        world_p.update(
            pool_size=90,
            eval_per_family=3,
            pretrain_size=300,
            ppl_size=9,
            facts=6,
            vocab_size=300,
        )
        base_p = dict(
            hidden_size=32,
            layers=2,
            heads=2,
            kv_heads=1,
            intermediate_size=64,
            steps=15,
            batch_size=16,
            warmup_steps=2,
            max_len=48,
        )
        rec_p = {"method": "full", "steps": 4, "micro_batch": 4, "max_len": 48}
        eval_p = {"max_samples_per_family": 2}
    w, ck = a.work, a.work / "checkpoints"
    stage("world", world_p, {}, w / "world", 0, ck / "world")
    stage(
        "pretrain",
        {**base_p, "data": "world"},
        {"data": w / "world"},
        w / "base",
        0,
        ck / "base",
    )
    stage(
        "prune",
        {"method": "magnitude", "model": "base", "sparsity": a.sparsity},
        {"model": w / "base"},
        w / "prune",
        0,
        ck / "prune",
    )
    rows: list[dict[str, Any]] = []

    def evaluate(model_dir: Path, name: str) -> dict[str, float]:
        m = stage(
            "evaluate",
            {"models": [name], "data": "world", **eval_p},
            {"models": [model_dir], "data": w / "world"},
            w / f"eval-{name}",
            0,
            ck / f"eval-{name}",
        )
        return summarise(m)

    ref = {
        "base": evaluate(w / "base", "base"),
        "prune": evaluate(w / "prune", "prune"),
    }
    for budget in a.budgets:
        for method in a.methods:
            for seed in a.seeds:
                if method == "full" and (budget != a.budgets[0]):
                    continue
                tag = f"{method}-b{budget}-s{seed}"
                sp: dict[str, Any] = {"method": method, "pool": "world", "seed": seed}
                if method != "full":
                    sp["budget"] = budget
                if method in ("paser", "perplexity", "ifd"):
                    sp["model"] = "prune"
                if method == "paser":
                    sp["reference"] = "base"
                inputs = {
                    "pool": w / "world",
                    "model": w / "prune",
                    "reference": w / "base",
                }
                stage("select", sp, inputs, w / f"sel-{tag}", seed, ck / "select")
                rep = json.loads((w / f"sel-{tag}" / "selection.json").read_text())
                stage(
                    "recover",
                    {**rec_p, "model": "prune", "data": "sel", "seed": seed},
                    {"model": w / "prune", "data": w / f"sel-{tag}"},
                    w / f"rec-{tag}",
                    seed,
                    ck / f"rec-{tag}",
                )
                row = {
                    "method": method,
                    "budget": budget if method != "full" else 1.0,
                    "seed": seed,
                    **evaluate(w / f"rec-{tag}", f"rec-{tag}"),
                    "selected": rep["selected"],
                    "corrupted_selected": rep["corrupted_selected"],
                    "corrupted_in_pool": rep["corrupted_in_pool"],
                }
                if method == "paser":
                    row.update(paser_extras(rep, w, ck / "select", seed))
                print(json.dumps(row), flush=True)
                rows.append(row)
    table = aggregate(rows)
    print("\nbase:", ref["base"], "\npruned:", ref["prune"])
    print(
        f"\n{'method':<12}{'budget':>7}  {'exact match':>17}  {'perplexity':>19}  "
        f"{'corrupted':>9}"
    )
    for t in table:
        print(
            f"{t['method']:<12}{t['budget']:>7.2f}  "
            f"{t['em_mean']:.3f} ± {t['em_std']:.3f}  "
            f"{t['ppl_mean']:9.3f} ± {t['ppl_std']:.3f}  {t['corrupted']:>9.1f}"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "select_quality.json").write_text(
        json.dumps({"rows": rows, "table": table, "reference": ref}, indent=2)
    )


def paser_extras(rep: dict[str, Any], w: Path, ck: Path, seed: int) -> dict[str, Any]:
    """ARI of PASER's clusters vs families (from the cached embeddings) and the
    concept filter's precision on corrupted records."""
    from sklearn.metrics import adjusted_rand_score

    from pipelines.contract import RunContext
    from stages.common.io import read_dataset
    from stages.select.paser import Params, cluster_pool
    from stages.select.scoring import embed

    pool = read_dataset(w / "world")
    p = Params(**{k: v for k, v in rep["params"].items() if k in Params.model_fields})
    emb, _ = embed(pool, ck, RunContext(), p.encoder)
    labels = cluster_pool(p, emb, seed)["labels"]
    fams = [r["family"] for r in pool]
    rej = rep["filter_rejected_total"]
    return {
        "ari_vs_family": float(adjusted_rand_score(fams, labels)),
        "k": rep["k"],
        "filter_rejected": rej,
        "filter_precision_corrupted": rep["filter_rejected_corrupted"] / rej
        if rej
        else float("nan"),
    }


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    keys = sorted({(r["method"], r["budget"]) for r in rows})
    for method, budget in keys:
        rs = [r for r in rows if r["method"] == method and r["budget"] == budget]
        em = [r["exact_match"] for r in rs]
        ppl = [r["perplexity"] for r in rs]
        out.append(
            {
                "method": method,
                "budget": budget,
                "n": len(rs),
                "em_mean": statistics.fmean(em),
                "em_std": statistics.stdev(em) if len(em) > 1 else 0.0,
                "ppl_mean": statistics.fmean(ppl),
                "ppl_std": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
                "corrupted": statistics.fmean(r["corrupted_selected"] for r in rs),
            }
        )
    return out


if __name__ == "__main__":
    main()
