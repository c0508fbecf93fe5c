"""Quality of every prune method on the embedded base model: perplexity on the
world's held-out text and mean per-family exact match, at 50% unstructured and
2:4 (magnitude, Wanda, SparseGPT) and ~25% of parameters removed (width, depth).

Builds the world and the base model through their stages' ``run`` (a few CPU
minutes) unless ``--world``/``--base`` point at existing artifact folders, then
prunes with ``stages.prune.run`` and scores with the evaluate kind's suites.

    .venv/bin/python benchmarks/prune_quality.py [--world artifacts/world \
        --base artifacts/base] [--threads 2]

Writes benchmarks/results/prune_quality.md (a markdown table) and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.contract import RunContext  # noqa: E402

CONFIGS: list[tuple[str, str, dict]] = [
    ("magnitude 50%", "magnitude", {"sparsity": 0.5}),
    ("wanda 50%", "wanda", {"sparsity": 0.5}),
    ("sparsegpt 50%", "sparsegpt", {"sparsity": 0.5}),
    ("magnitude 2:4", "magnitude", {"pattern": "2:4"}),
    ("wanda 2:4", "wanda", {"pattern": "2:4"}),
    ("sparsegpt 2:4", "sparsegpt", {"pattern": "2:4"}),
    ("width 25% (l2)", "width", {"sparsity": 0.25}),
    ("width 25% (taylor)", "width", {"sparsity": 0.25, "importance": "taylor"}),
    ("depth 25%", "depth", {"sparsity": 0.25}),
]


def build(kind_module: str, params: object, inputs: dict, out: Path) -> Path:
    """Run a stage's ``run`` into ``out`` unless it is already there."""
    import importlib

    if (out / "config.json").exists() or (out / "world.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    res = importlib.import_module(kind_module).run(params, inputs, tmp, RunContext())
    (tmp / "metrics.json").write_text(json.dumps(res.metrics, indent=1))
    tmp.rename(out)
    return out


def score(model_dir: Path, world: Path, max_per_family: int | None) -> dict:
    from stages.common.io import load_model, load_tokenizer
    from stages.evaluate import Params as EvalParams
    from stages.evaluate import exact_match, perplexity

    ev = EvalParams(
        method="exact_match",
        models=["m"],
        data="world",
        max_samples_per_family=max_per_family,
    )
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    ctx = RunContext(name=model_dir.name)
    out = perplexity.score(model, tok, world, ev, ctx)
    out.update(exact_match.score(model, tok, world, ev, ctx))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/quality")
    ap.add_argument("--world", type=Path, help="existing world artifact folder")
    ap.add_argument("--base", type=Path, help="existing base model folder")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=None)
    ap.add_argument("--max-per-family", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stages import world as world_kind
    from stages.world import pretrain

    args.work.mkdir(parents=True, exist_ok=True)
    world = args.world or build(
        "stages.world", world_kind.Params(method="synthetic"), {}, args.work / "world"
    )
    base = args.base or build(
        "stages.world.pretrain",
        pretrain.Params(method="llama", data="world"),
        {"data": world},
        args.work / "base",
    )
    from stages.prune import METHODS

    rows = [
        {
            "config": "base (dense)",
            "method": "-",
            **score(base, world, args.max_per_family),
        }
    ]
    for label, method, kw in CONFIGS:
        params = METHODS.load(method).Params(
            model="base",
            calib="world",
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            **kw,
        )
        out = args.work / label.replace(" ", "_").replace("%", "").replace(":", "-")
        t0 = time.perf_counter()
        build("stages.prune", params, {"model": base, "calib": world}, out)
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append(
            {
                "config": label,
                "method": method,
                **metrics,
                **score(out, world, args.max_per_family),
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(
            f"{label}: ppl {rows[-1]['ppl']:.3f} em {rows[-1]['em/mean']:.3f}",
            flush=True,
        )

    head = (
        "| config | removed params | sparsity | ppl | ppl / base | EM mean | time s |"
    )
    lines = [head, "|---|---|---|---|---|---|---|"]
    b = rows[0]
    for r in rows:
        lines.append(
            f"| {r['config']} | {r.get('params_removed_frac', 0):.1%} | "
            f"{r.get('sparsity', 0):.1%} | {r['ppl']:.3f} | "
            f"{r['ppl'] / b['ppl']:.2f} | "
            f"{r['em/mean']:.3f} | {r.get('time_s', 0):.1f} |"
        )
    table = "\n".join(lines)
    print(table)
    res = ROOT / "benchmarks/results"
    (res / "prune_quality.md").write_text(table + "\n")
    (res / "prune_quality.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
