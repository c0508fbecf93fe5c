"""Recovery quality by selection method on the embedded default world:
PASER vs random vs perplexity vs IFD vs the full pool, at budgets 10% and 20%,
over seeds (mean ± std of per-family exact match and perplexity), the adjusted
Rand index of PASER's clusters against the world's families (real MiniLM
embeddings), and, on a noisy copy of the pool, the corrupted records each
method selects and the concept filter's precision on them. Runs the stages'
own run() functions in a work folder; finished stages are reused.

By default it uses the default world / base / 50%-magnitude-pruned model in
benchmarks/results/assets/, built on first use (benchmarks/assets.py;
``--world/--base/--prune`` to point elsewhere; the world folder is copied, the
models are only read). ``--micro`` builds a tiny world and model instead (a
short smoke run of the whole script). Work folder (finished stages are
reused): benchmarks/results/select_quality/ (``select_quality_micro/`` with
``--micro``; ``--work``); results: benchmarks/results/select_quality.md and
.json (``select_quality_micro.*`` with ``--micro``).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_quality.py \
        --seeds 0 1 2 --budgets 0.1 0.2 --noise 0.1
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.tiny import MICRO_WORLD as TINY_WORLD  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
METHODS = ("paser", "random", "perplexity", "ifd", "full")
ABLATIONS = {  # PASER ablations (label -> paser params), --ablations
    "paser-no-cluster": {"clustering": False},
    "paser-uniform": {"allocation": "uniform"},
    "paser-no-filter": {"concept_filter": False},
}


def stage(
    kind: str, params: dict[str, Any], inputs: dict[str, Any], out: Path, seed: int
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
    if out.exists():
        shutil.rmtree(out)  # a half-finished stage starts again
    out.mkdir(parents=True)  # the engine hands stages a made folder
    ck = out.parent / "checkpoints" / (kind if kind == "select" else out.name)
    t = time.perf_counter()
    res = mod.run(
        p, inputs, out, RunContext(seed=seed, checkpoint_dir=ck, name=out.name)
    )
    done.write_text(
        json.dumps({**res.metrics, "bench_seconds": time.perf_counter() - t})
    )
    return json.loads(done.read_text())


def summarise(metrics: dict[str, float]) -> dict[str, Any]:
    """Mean per-family exact match (``<model>/em/<family>``), the per-family
    values, and perplexity (``<model>/ppl``) from the evaluate stage's metrics."""
    em = {
        k.split("/em/")[1]: v
        for k, v in metrics.items()
        if "/em/" in k and not k.endswith("/mean")
    }
    ppl = [v for k, v in metrics.items() if k.endswith("/ppl")]
    return {
        "exact_match": statistics.fmean(em.values()) if em else float("nan"),
        "perplexity": statistics.fmean(ppl) if ppl else float("nan"),
        "em_family": em,
    }


MICRO_WORLD = {  # the tests' micro world, smaller still (tests/tiny.py)
    **TINY_WORLD,
    "eval_per_family": 3,
    "pretrain_size": 300,
    "ppl_size": 9,
    "vocab_size": 300,
}


def micro_assets(w: Path) -> tuple[Path, Path, Path]:
    """A tiny world, base model and 50% magnitude-pruned model (smoke runs)."""
    base_p = dict(
        hidden_size=32,
        layers=2,
        heads=2,
        kv_heads=1,
        intermediate_size=64,
        steps=15,
        batch_size=16,
        warmup_ratio=0.1,
        max_len=48,
    )
    stage("world", MICRO_WORLD, {}, w / "world", 0)
    stage("pretrain", {**base_p, "data": "world"}, {"data": w / "world"}, w / "base", 0)
    stage(
        "prune",
        {"method": "magnitude", "model": "base", "sparsity": 0.5},
        {"model": w / "base"},
        w / "prune",
        0,
    )
    return w / "world", w / "base", w / "prune"


def noisy_world(world: Path, noise: float, out: Path) -> Path:
    """The same world (same params and seed) with ``noise`` corrupted pool records."""
    import yaml

    f = world / "params.resolved.yaml"  # written by the engine; micro worlds lack it
    resolved = yaml.safe_load(f.read_text())["params"] if f.exists() else MICRO_WORLD
    params = {k: v for k, v in resolved.items() if k != "method"}
    stage("world", {**params, "noise": noise}, {}, out, int(params.get("seed") or 0))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--budgets", type=float, nargs="+", default=[0.1, 0.2])
    ap.add_argument("--methods", nargs="+", default=list(METHODS))
    ap.add_argument("--noise", type=float, default=0.1)
    for name in ("world", "base", "prune"):
        ap.add_argument(
            f"--{name}",
            type=Path,
            help=f"{name} artifact folder (default: benchmarks/results/assets/{name},"
            " built when missing)",
        )
    ap.add_argument(
        "--eval-samples",
        type=int,
        default=None,
        help="eval records per family (default: all)",
    )
    ap.add_argument("--ablations", action="store_true", help="add PASER ablations")
    ap.add_argument("--micro", action="store_true")
    ap.add_argument(
        "--work",
        type=Path,
        help="work folder; finished stages in it are reused (default: "
        "benchmarks/results/select_quality/, or select_quality_micro/ with --micro)",
    )
    a = ap.parse_args()
    w = a.work or RESULTS / ("select_quality_micro" if a.micro else "select_quality")
    w.mkdir(parents=True, exist_ok=True)
    rec_p: dict[str, Any] = {"method": "full"}  # recover's defaults
    eval_p: dict[str, Any] = {}
    if a.eval_samples:
        eval_p["max_samples_per_family"] = a.eval_samples
    if a.micro:
        world, base, prune = micro_assets(w)
        rec_p.update(steps=4, micro_batch=4, max_len=48)
        eval_p["max_samples_per_family"] = 2
    else:
        if not (a.world and a.base and a.prune):
            from benchmarks.assets import default_assets

            built = default_assets()
            a.world, a.base, a.prune = (
                a.world or built["world"],
                a.base or built["base"],
                a.prune or built["prune"],
            )
        world = w / "world"
        if not world.exists():
            shutil.copytree(a.world, world)
        base, prune = a.base, a.prune

    def evaluate(model_dir: Path, tag: str) -> dict[str, Any]:
        m = stage(
            "evaluate",
            {"models": [model_dir.name], "data": "world", **eval_p},
            {"models": [model_dir], "data": world},
            w / f"eval-{tag}",
            0,
        )
        return {**summarise(m), "seconds": m.get("bench_seconds")}

    ref = {"base": evaluate(base, "base"), "prune": evaluate(prune, "prune")}
    print("reference:", json.dumps({k: v["exact_match"] for k, v in ref.items()}))
    inputs = {"pool": world, "model": prune, "reference": base}
    rows: list[dict[str, Any]] = []
    methods = list(a.methods) + (list(ABLATIONS) if a.ablations else [])
    for budget in a.budgets:
        for method in methods:
            for seed in a.seeds:
                if method == "full" and budget != a.budgets[0]:
                    continue  # the full pool does not depend on the budget
                tag = f"{method}-b{budget}-s{seed}"
                sel = w / f"sel-{tag}"
                stage("select", select_params(method, budget, seed), inputs, sel, seed)
                rep = json.loads((sel / "selection.json").read_text())
                r = stage(
                    "recover",
                    {**rec_p, "model": "prune", "data": "sel", "seed": seed},
                    {"model": prune, "data": sel},
                    w / f"rec-{tag}",
                    seed,
                )
                row = {
                    "method": method,
                    "budget": budget if method != "full" else 1.0,
                    "seed": seed,
                    **evaluate(w / f"rec-{tag}", tag),
                    "recover_seconds": r.get("bench_seconds"),
                    "selected": rep["selected"],
                    "families": rep["families"],
                }
                if method.startswith("paser"):
                    row["paser"] = paser_extras(rep, world, sel, seed)
                print(
                    json.dumps({k: v for k, v in row.items() if k != "paser"}),
                    flush=True,
                )
                rows.append(row)
    noisy = noisy_section(a, methods, world, prune, base, w) if a.noise > 0 else []
    out = {
        "reference": ref,
        "rows": rows,
        "table": aggregate(rows),
        "noisy": noisy,
        "eval_samples": eval_p.get("max_samples_per_family"),
        "world": str(a.world if not a.micro else world),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "select_quality_micro" if a.micro else "select_quality"
    (RESULTS / f"{name}.json").write_text(json.dumps(out, indent=2))
    (RESULTS / f"{name}.md").write_text(markdown(out, a))
    print((RESULTS / f"{name}.md").read_text())


def select_params(label: str, budget: float, seed: int) -> dict[str, Any]:
    """Select-stage params for a method label (a method or a PASER ablation)."""
    method = "paser" if label in ABLATIONS else label
    sp: dict[str, Any] = {"method": method, "pool": "world", "seed": seed}
    sp.update(ABLATIONS.get(label, {}))
    if method != "full":
        sp["budget"] = budget
    if method in ("paser", "perplexity", "ifd"):
        sp["model"] = "prune"
    if method == "paser":
        sp["reference"] = "base"
    return sp


def paser_extras(rep: dict[str, Any], world: Path, sel: Path, seed: int) -> dict:
    """ARI of PASER's clusters vs families (real MiniLM embeddings, from the
    stage's cache), each cluster's family make-up, CDS, allocation and take."""
    import csv

    from sklearn.metrics import adjusted_rand_score

    from pipelines.contract import RunContext
    from stages.common.io import read_dataset
    from stages.select.paser import Params, cluster_pool
    from stages.select.scoring import embed

    pool = read_dataset(world)
    p = Params(**{k: v for k, v in rep["params"].items() if k in Params.model_fields})
    from stages.select.scoring import embed_record_text, embed_text

    text = embed_text if p.embed == "instruction" else embed_record_text
    emb, new = embed(pool, Path(rep["cache"]), RunContext(), p.encoder, text=text)
    labels = cluster_pool(p, emb, seed)["labels"]
    fams = [r["family"] for r in pool]
    make_up: list[dict[str, int]] = [{} for _ in range(int(labels.max()) + 1)]
    for f, c in zip(fams, labels, strict=True):
        make_up[c][f] = make_up[c].get(f, 0) + 1
    with open(sel / "clusters.csv") as fh:
        clusters = list(csv.DictReader(fh))
    for c, row in enumerate(clusters):
        row["families"] = dict(sorted(make_up[c].items(), key=lambda kv: -kv[1]))
    return {
        "ari_vs_family": float(adjusted_rand_score(fams, labels)),
        "k": rep["k"],
        "k_rule": rep["k_rule"],
        "filter_rejected": rep["filter_rejected_total"],
        "clusters": clusters,
        "embeddings_recomputed": new,
    }


def noisy_section(
    a: argparse.Namespace,
    methods: list[str],
    world: Path,
    prune: Path,
    base: Path,
    w: Path,
) -> list[dict[str, Any]]:
    """Corrupted records selected at the largest budget by each method on a
    noisy copy of the pool, and the concept filter's precision on them."""
    nw = noisy_world(world, a.noise, w / "world-noisy")
    inputs = {"pool": nw, "model": prune, "reference": base}
    budget = max(a.budgets)
    out = []
    for method in [m for m in methods if m != "full"]:
        for seed in a.seeds:
            sel = w / f"noisy-sel-{method}-b{budget}-s{seed}"
            stage("select", select_params(method, budget, seed), inputs, sel, seed)
            rep = json.loads((sel / "selection.json").read_text())
            row = {
                "method": method,
                "seed": seed,
                "budget": budget,
                "selected": rep["selected"],
                "corrupted_selected": rep["corrupted_selected"],
                "corrupted_in_pool": rep["corrupted_in_pool"],
                "pool_size": rep["pool_size"],
            }
            if method.startswith("paser"):
                rej = rep["filter_rejected_total"]
                row.update(
                    filter_rejected=rej,
                    filter_rejected_corrupted=rep["filter_rejected_corrupted"],
                    filter_precision=rep["filter_rejected_corrupted"] / rej
                    if rej
                    else None,
                )
            print(json.dumps(row), flush=True)
            out.append(row)
    return out


def aggregate(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for method, budget in dict.fromkeys((r["method"], r["budget"]) for r in rows):
        rs = [r for r in rows if r["method"] == method and r["budget"] == budget]
        em = [r["exact_match"] for r in rs]
        ppl = [r["perplexity"] for r in rs]
        fams = sorted(rs[0]["em_family"])
        out.append(
            {
                "method": method,
                "budget": budget,
                "n": len(rs),
                "em_mean": statistics.fmean(em),
                "em_std": statistics.stdev(em) if len(em) > 1 else 0.0,
                "ppl_mean": statistics.fmean(ppl),
                "ppl_std": statistics.stdev(ppl) if len(ppl) > 1 else 0.0,
                "em_family": {
                    f: statistics.fmean(r["em_family"][f] for r in rs) for f in fams
                },
            }
        )
    return out


def pm(values: list[float], fmt: str = ".3f") -> str:
    m = statistics.fmean(values)
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{m:{fmt}} ± {sd:{fmt}}"


def markdown(res: dict[str, Any], a: argparse.Namespace) -> str:
    """Tables: quality by method/budget, per-family EM, PASER's clusters, noise."""
    ref, table, rows = res["reference"], res["table"], res["rows"]
    n_eval = res["eval_samples"] or "all (50)"
    lines = [
        "# Recovery quality by selection method (embedded default world)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_quality.py "
        f"--seeds {' '.join(map(str, a.seeds))} --budgets "
        f"{' '.join(map(str, a.budgets))} --noise {a.noise}` (1 thread). "
        f"World/base/pruned: {res['world']}, {a.base}, {a.prune} (50% magnitude). "
        f"Recovery: recover `full` with its defaults; eval records per family: "
        f"{n_eval}. Exact match = mean over the 9 families; perplexity on ppl.txt. "
        "Mean ± std over seeds (the seed drives selection and recovery).",
        "",
        "| model | exact match | perplexity |",
        "|---|---|---|",
        f"| base (unpruned) | {ref['base']['exact_match']:.3f} | "
        f"{ref['base']['perplexity']:.3f} |",
        f"| pruned, no recovery | {ref['prune']['exact_match']:.3f} | "
        f"{ref['prune']['perplexity']:.3f} |",
        "",
        "| method | budget | records | exact match | perplexity | seeds |",
        "|---|---|---|---|---|---|",
    ]
    for t in sorted(table, key=lambda t: (t["budget"], -t["em_mean"])):
        rs = [
            r for r in rows if (r["method"], r["budget"]) == (t["method"], t["budget"])
        ]
        lines.append(
            f"| {t['method']} | {t['budget']:.0%} | {rs[0]['selected']} | "
            f"{pm([r['exact_match'] for r in rs])} | "
            f"{pm([r['perplexity'] for r in rs])} | {t['n']} |"
        )
    fams = sorted(ref["base"]["em_family"])
    lines += [
        "",
        "Per-family exact match (mean over seeds):",
        "",
        "| method | budget | " + " | ".join(fams) + " |",
        "|---|---|" + "---|" * len(fams),
    ]
    for name in ("base", "prune"):
        e = ref[name]["em_family"]
        lines.append(
            f"| {name} | – | " + " | ".join(f"{e[f]:.2f}" for f in fams) + " |"
        )
    for t in sorted(table, key=lambda t: (t["budget"], t["method"])):
        e = t["em_family"]
        lines.append(
            f"| {t['method']} | {t['budget']:.0%} | "
            + " | ".join(f"{e[f]:.2f}" for f in fams)
            + " |"
        )
    pas = [r for r in rows if r["method"] == "paser"]  # ablations: own rows
    if pas:
        aris = [r["paser"]["ari_vs_family"] for r in pas]
        lines += [
            "",
            f"PASER clusters vs the world's families (real all-MiniLM-L6-v2 "
            f"embeddings): ARI {pm(aris)} over {len(aris)} runs; K = "
            f"{sorted({r['paser']['k'] for r in pas})} ({pas[0]['paser']['k_rule']}).",
        ]
        last = [r for r in pas if r["budget"] == max(a.budgets)][0]
        lines += [
            "",
            f"PASER clusters at budget {last['budget']:.0%}, seed {last['seed']} "
            "(CDS = mean response JSD; families = pool make-up of the cluster):",
            "",
            "| cluster | size | CDS | allocated | taken | rejected | families |",
            "|---|---|---|---|---|---|---|",
        ]
        for c in last["paser"]["clusters"]:
            make = ", ".join(f"{f} {n}" for f, n in c["families"].items())
            lines.append(
                f"| {c['cluster']} | {c['size']} | {float(c['cds']):.4f} | "
                f"{c['allocated']} | {c['taken']} | {c['rejected']} | {make} |"
            )
        lines += [
            "",
            f"Selected records per family at that budget (seed {last['seed']}):",
            "",
        ]
        sel_rows = [
            r
            for r in rows
            if r["budget"] == last["budget"] and r["seed"] == last["seed"]
        ]
        lines += ["| method | " + " | ".join(fams) + " |", "|---|" + "---|" * len(fams)]
        for r in sel_rows:
            lines.append(
                f"| {r['method']} | "
                + " | ".join(str(r["families"].get(f, 0)) for f in fams)
                + " |"
            )
    if res["noisy"]:
        nz = res["noisy"]
        first = nz[0]
        lines += [
            "",
            f"Noisy pool (noise {a.noise}: {first['corrupted_in_pool']} of "
            f"{first['pool_size']} records corrupted, same seed), budget "
            f"{first['budget']:.0%}; random selection expects "
            f"{first['corrupted_in_pool'] * first['selected'] / first['pool_size']:.1f}"
            " corrupted:",
            "",
            "| method | selected | corrupted selected | filter rejections | "
            "of which corrupted | filter precision |",
            "|---|---|---|---|---|---|",
        ]
        for m in dict.fromkeys(r["method"] for r in nz):
            rs = [r for r in nz if r["method"] == m]
            cs = [float(r["corrupted_selected"]) for r in rs]
            if m.startswith("paser"):
                rej = [float(r["filter_rejected"]) for r in rs]
                bad = [float(r["filter_rejected_corrupted"]) for r in rs]
                prec = (sum(bad) / sum(rej)) if sum(rej) else float("nan")
                extra = f"{pm(rej, '.1f')} | {pm(bad, '.1f')} | {prec:.3f}"
            else:
                extra = "– | – | –"
            lines.append(f"| {m} | {rs[0]['selected']} | {pm(cs, '.1f')} | {extra} |")
        lines += [
            "",
            f"Filter precision baseline (corrupted share of the pool): "
            f"{first['corrupted_in_pool'] / first['pool_size']:.3f}.",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
