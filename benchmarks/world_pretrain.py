"""Benchmark: build the default world, pretrain the default base model, report.

Prints the per-family exact-match table of the trained model next to the
untrained baseline (same architecture, step 0), perplexity of both, and wall
times; writes benchmarks/results/world_pretrain.md. Targets (brief): mean EM
>= 0.90 and training <= 300 s on a 2-core CPU.

    .venv/bin/python benchmarks/world_pretrain.py [--threads 2] [--set steps=1500]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def parse_sets(items: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for item in items:
        key, _, value = item.partition("=")
        out[key] = json.loads(value) if value[:1] in "0123456789-[{tf" else value
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", action="append", default=[], help="pretrain param=value")
    ap.add_argument(
        "--world-set", action="append", default=[], help="world param=value"
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=None,
        help="a new folder for the world and base (default: a fresh "
        "benchmarks/results/world_pretrain_* folder)",
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from pipelines.contract import RunContext
    from stages.common.io import load_tokenizer
    from stages.evaluate import exact_match, perplexity
    from stages.evaluate.world import Params as EvalParams
    from stages.world import METHODS as WORLD
    from stages.world import pretrain
    from stages.world import run as build_world
    from stages.world.pretrain.llama import build_model

    results = Path(__file__).parent / "results"
    results.mkdir(exist_ok=True)
    work = args.work or Path(tempfile.mkdtemp(prefix="world_pretrain_", dir=results))
    world, base = work / "world", work / "base"
    for d in (world, base):
        d.mkdir(parents=True, exist_ok=False)
    t0 = time.perf_counter()
    wp = WORLD.load("synthetic").Params(**parse_sets(args.world_set))
    build_world(wp, {}, world, RunContext(name="world"))
    t_world = time.perf_counter() - t0

    params = pretrain.METHODS.load("llama").Params(data="world", **parse_sets(args.set))
    # baseline: the same architecture before any training step
    tok = load_tokenizer(world / "tokenizer")
    torch.manual_seed(0)
    init = build_model(params, tok).eval()
    ev = EvalParams(models=["init"], data="world")
    ctx = RunContext(name="baseline")
    before = exact_match.score(init, tok, world, ev, ctx)
    before.update(perplexity.score(init, tok, world, ev, ctx))

    t1, c1 = time.perf_counter(), time.process_time()
    res = pretrain.run(params, {"data": world}, base, RunContext(name="base"))
    t_stage, c_stage = time.perf_counter() - t1, time.process_time() - c1
    after, train_s = res.metrics, res.metrics["train/seconds"]

    fams = sorted(k for k in after if k.startswith("em/") and k != "em/mean")
    lines = [
        f"threads {args.threads}, params {int(after['params'])}, steps {params.steps}, "
        f"batch {params.batch_size}, world {wp.pretrain_size} pretrain records",
        "",
        "| family | untrained EM | trained EM |",
        "|---|---|---|",
        *[f"| {k[3:]} | {before[k]:.3f} | {after[k]:.3f} |" for k in fams],
        f"| **mean** | {before['em/mean']:.3f} | {after['em/mean']:.3f} |",
        f"| perplexity | {before['ppl']:.2f} | {after['ppl']:.2f} |",
        "",
        f"ppl ratio trained/untrained: {after['ppl'] / before['ppl']:.4f}",
        f"loss {after['train/loss_first']:.3f} -> {after['train/loss_final']:.3f}",
        f"world build {t_world:.1f}s; training {train_s:.1f}s "
        f"({train_s / 300:.2f} of the 300 s budget); whole stage {t_stage:.1f}s wall, "
        f"{c_stage:.1f}s CPU (all threads; on a busy machine CPU time is the "
        "better estimate of idle wall time x threads)",
        f"target mean EM >= 0.90: {'MET' if after['em/mean'] >= 0.9 else 'MISSED'}",
    ]
    report = "\n".join(lines)
    print(report)
    (results / "world_pretrain.md").write_text(report + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
