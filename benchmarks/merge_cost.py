"""Time and peak RSS of every merge method, carp against mergekit on the same
inputs in the same run: three experts and a base of one random-weight Llama
(default ~296M parameters, 1.1 GiB of float32 safetensors each).

Each measurement runs in its own process; its peak RSS is the child's
``ru_maxrss`` (``os.wait4``), which counts every page the process touched,
memory-mapped input pages included. carp and mergekit runs alternate, so both
meet the same machine load; ``--repeats`` gives the spread of the time ratio.
Baselines in the same run: ``import`` (python + torch + safetensors + the merge
module, nothing merged). The issue's bar: carp's peak RSS <= 25% of the inputs'
total size. mergekit 0.1.5 runs from ``.venv-mergekit`` (created on first use;
see tests/stages/merge/mergekit_env.py); it has no PCB, so PCB is carp-only.

Default shape: hidden 1024, 24 layers, 8000-token vocabulary, so the largest
tensor (the embedding, 8.2M parameters) is ~3% of the model, as in Llama-2-7B
(2%). A merge's working set is a few copies of the largest tensor, so a model
whose embedding is a larger share needs proportionally more.

    .venv/bin/python benchmarks/merge_cost.py [--methods linear ties ...]
        [--repeats 2] [--threads 2] [--layers 24] [--vocab 8000] [--no-mergekit]

Writes benchmarks/results/merge_cost.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# method -> (carp params, mergekit global parameters, per-model mergekit values)
DENSITY = 0.5
SETUPS: dict[str, tuple[dict[str, Any], dict[str, Any], dict[str, float]]] = {
    "linear": ({}, {}, {"weight": 1.0}),
    "slerp": ({"t": 0.5}, {"t": 0.5}, {}),
    "task_arithmetic": ({}, {}, {"weight": 1.0}),
    "ties": ({"density": DENSITY}, {}, {"weight": 1.0, "density": DENSITY}),
    "dare_linear": ({"density": DENSITY}, {}, {"weight": 1.0, "density": DENSITY}),
    "dare_ties": ({"density": DENSITY}, {}, {"weight": 1.0, "density": DENSITY}),
    "pcb": ({"density": DENSITY}, None, {}),  # None: mergekit has no PCB
}
TASK_VECTOR = {"task_arithmetic", "ties", "dare_linear", "dare_ties", "pcb"}


def make_inputs(work: Path, dims: dict[str, int]) -> dict[str, Path]:
    """``base``, ``e0``..``e2`` (base + N(0, 0.02) deltas) under ``work``."""
    from tests.stages.merge.common import build_family

    tag = "-".join(f"{k}{v}" for k, v in sorted(dims.items()))
    root = work / f"family-{tag}"
    names = ["base", "e0", "e1", "e2"]
    if not all((root / n / "model.safetensors").exists() for n in names):
        build_family(root, n_experts=3, **dims)
    return {n: root / n for n in names}


def build_in_child(work: Path, dims: dict[str, int], env: dict[str, str]) -> None:
    """Build the inputs in a child process: a child's ``ru_maxrss`` starts from
    its parent's at fork, so the measuring parent must stay small."""
    cmd = [sys.executable, __file__, "--child", "build", "--family", json.dumps(dims)]
    subprocess.run([*cmd, "--out", str(work)], env=env, check=True)


def models_for(method: str, family: dict[str, Path]) -> tuple[list[Path], Path | None]:
    experts = [family["e0"], family["e1"], family["e2"]]
    if method == "slerp":
        return experts[:2], None
    return experts, family["base"] if method in TASK_VECTOR else None


def child(args: argparse.Namespace) -> None:
    """One carp measurement in this process (``--child import`` or a method)."""
    import torch

    torch.set_num_threads(args.threads)
    from pipelines.contract import RunContext
    from stages.merge import METHODS, run

    if args.child == "import":
        return
    if args.child == "build":
        make_inputs(Path(args.out), json.loads(args.family))
        return
    family = json.loads(args.family)
    family = {k: Path(v) for k, v in family.items()}
    models, base = models_for(args.child, family)
    kw = dict(SETUPS[args.child][0])
    if base is not None:
        kw["base"] = "base"
    params = METHODS.load(args.child).Params(
        method=args.child, models=[m.name for m in models], **kw
    )
    inputs: dict[str, Any] = {"models": models}
    if base is not None:
        inputs["base"] = base
    run(params, inputs, Path(args.out), RunContext(seed=0, name="merge"))


def _wait(cmd: list[str], env: dict[str, str]) -> dict[str, float]:
    """Run ``cmd``; wall time and the child's peak RSS (MiB)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    err = proc.stderr.read() if proc.stderr else ""
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd[0]} failed ({proc.returncode}):\n{err[-3000:]}")
    return {"time_s": seconds, "peak_rss_mb": usage.ru_maxrss / 1024}


def measure_carp(what: str, family: dict[str, Path], out: Path, args) -> dict:
    import shutil

    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    fam = json.dumps({k: str(v) for k, v in family.items()})
    cmd = [sys.executable, __file__, "--child", what, "--family", fam]
    cmd += ["--out", str(out), "--threads", str(args.threads)]
    return _wait(cmd, args.env)


def measure_mergekit(method: str, family: dict[str, Path], out: Path, args) -> dict:
    import shutil

    from tests.stages.merge.mergekit_env import ensure_venv, mergekit_config

    shutil.rmtree(out, ignore_errors=True)
    models, base = models_for(method, family)
    if method == "slerp":  # mergekit's slerp names its first model as base_model
        base = models[0]
    _, params, per = SETUPS[method]
    per_model = {k: [v] * len(models) for k, v in per.items()}
    cfg = mergekit_config(method, models, base, params, per_model)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    cmd = [str(ensure_venv()), str(path), str(out), "--random-seed", "0"]
    return _wait(cmd, args.env)


def _mib(path: Path) -> float:
    return sum(f.stat().st_size for f in path.glob("*.safetensors")) / 2**20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--methods", nargs="+", default=list(SETUPS), choices=SETUPS)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--hidden", type=int, default=1024)
    ap.add_argument("--layers", type=int, default=24)
    ap.add_argument("--vocab", type=int, default=8000)
    ap.add_argument("--no-mergekit", action="store_true")
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/merge")
    ap.add_argument("--child")
    ap.add_argument("--family")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args)

    n = str(args.threads)
    args.env = {**os.environ, "OMP_NUM_THREADS": n, "MKL_NUM_THREADS": n}
    args.env["PYTHONPATH"] = str(ROOT)
    dims = dict(
        hidden=args.hidden,
        layers=args.layers,
        heads=args.hidden // 64,
        kv_heads=args.hidden // 128,
        intermediate=int(args.hidden * 2.75),
        vocab_size=args.vocab,
        max_positions=2048,
    )
    build_in_child(args.work, dims, args.env)
    family = make_inputs(args.work, dims)  # the paths (already built)
    size = {k: _mib(v) for k, v in family.items()}
    print("inputs (MiB):", {k: round(v) for k, v in size.items()}, flush=True)
    baseline = measure_carp("import", family, args.work / "out", args)
    print("import baseline:", baseline, flush=True)
    rows = []
    for method in args.methods:
        models, base = models_for(method, family)
        total = sum(size[m.name] for m in models) + (size["base"] if base else 0)
        runs: dict[str, list[dict]] = {"carp": [], "mergekit": []}
        for _ in range(args.repeats):  # alternate, so both meet the same load
            runs["carp"].append(measure_carp(method, family, args.work / "out", args))
            if SETUPS[method][1] is not None and not args.no_mergekit:
                runs["mergekit"].append(
                    measure_mergekit(method, family, args.work / "out-mk", args)
                )
        c, m = runs["carp"], runs["mergekit"]
        ratios = [a["time_s"] / b["time_s"] for a, b in zip(c, m, strict=False)]
        row = {
            "method": method,
            "inputs": len(models) + (1 if base else 0),
            "inputs_mib": total,
            "carp_s": statistics.median(r["time_s"] for r in c),
            "carp_rss_mib": max(r["peak_rss_mb"] for r in c),
            "mergekit_s": statistics.median(r["time_s"] for r in m) if m else None,
            "mergekit_rss_mib": max(r["peak_rss_mb"] for r in m) if m else None,
            "time_ratio": statistics.median(ratios) if ratios else None,
            "time_ratio_range": [min(ratios), max(ratios)] if ratios else None,
        }
        row["carp_rss_share"] = row["carp_rss_mib"] / total
        rows.append(row)
        print(json.dumps(row), flush=True)
    write_table(rows, baseline, size, args)


def write_table(rows: list[dict], baseline: dict, size: dict, args) -> None:
    def f(x: Any, fmt: str) -> str:
        return "—" if x is None else format(x, fmt)

    lines = [
        f"Inputs: base + 3 experts of {size['base']:.0f} MiB each (float32); "
        f"{args.threads} threads; {args.repeats} alternating repeats; import "
        f"baseline {baseline['peak_rss_mb']:.0f} MiB RSS, "
        f"{baseline['time_s']:.1f} s.",
        "",
        "| method | inputs | inputs MiB | carp s | mergekit s | time carp/mergekit "
        "(range) | carp peak RSS MiB | carp RSS / inputs | mergekit peak RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        rng = r["time_ratio_range"]
        ratio = (
            f"{r['time_ratio']:.2f} ({rng[0]:.2f}–{rng[1]:.2f})"
            if r["time_ratio"] is not None
            else "—"
        )
        lines.append(
            f"| {r['method']} | {r['inputs']} | {r['inputs_mib']:.0f} | "
            f"{r['carp_s']:.1f} | {f(r['mergekit_s'], '.1f')} | {ratio} | "
            f"{r['carp_rss_mib']:.0f} | {r['carp_rss_share']:.1%} | "
            f"{f(r['mergekit_rss_mib'], '.0f')} |"
        )
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "merge_cost.md").write_text("\n".join(lines) + "\n")
    (out / "merge_cost.json").write_text(
        json.dumps({"baseline": baseline, "sizes_mib": size, "rows": rows}, indent=1)
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
