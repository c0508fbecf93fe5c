"""Serial vs parallel Prefect flow on a sweep of independent nodes, same run.

The declaration ``benchmarks/flow_parallel.yaml`` sweeps ``recover`` over 8 seeds
(8 independent nodes after a shared world / base / prune / select). The upstream
nodes are built once; then the sweep runs under the flow with
``max_parallel=1`` (the serial baseline) and ``max_parallel=N``, alternating,
``--repeats`` times each, and the script reports the wall-time ratio
serial / parallel with the spread over repeats, and checks that both runs
publish identical fingerprints.

    .venv/bin/python benchmarks/flow_parallel.py [--parallel 2] [--repeats 2]
        [--steps 1000]

Writes ``benchmarks/results/flow_parallel/`` (the project folder it runs in) and
prints a markdown table. About 5 minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DECL = ROOT / "benchmarks" / "flow_parallel.yaml"


def sweep_nodes(work: Path) -> list[Path]:
    return sorted((work / "artifacts").glob("recover@*"))


def fingerprints(work: Path) -> dict[str, str]:
    return {
        p.name: json.loads((p / "carp.json").read_text())["fingerprint"]
        for p in sweep_nodes(work)
    }


def declaration(work: Path, steps: int | None) -> Path:
    """The benchmark declaration, with the recover steps overridden if asked
    (a copy in the work folder: longer nodes amortise the worker start-up)."""
    if steps is None:
        return DECL
    import yaml

    decl = yaml.safe_load(DECL.read_text())
    decl["stages"]["recover"]["steps"] = steps
    out = work / f"flow_parallel-{steps}.yaml"
    out.write_text(yaml.safe_dump(decl, sort_keys=False))
    return out


def timed_flow(work: Path, decl: Path, parallel: int) -> float:
    """Wall seconds of one flow run with the sweep's outputs removed first
    (world/base/prune/select stay current and are skipped) and their
    checkpoints too, so every run trains from scratch."""
    from flows.pipeline import run_pipeline

    for p in [*sweep_nodes(work), *(work / "checkpoints").glob("recover@*")]:
        shutil.rmtree(p)  # no resume from the previous run's checkpoints
    t0 = time.perf_counter()
    report = run_pipeline(str(decl), work, track=False, max_parallel=parallel)
    seconds = time.perf_counter() - t0
    if report.failed:
        raise SystemExit(report.summary())
    return seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--parallel", type=int, default=4, help="max_parallel of the run")
    ap.add_argument("--repeats", type=int, default=2, help="runs of each mode")
    ap.add_argument(
        "--steps", type=int, default=None, help="recover steps per node (default 60)"
    )
    ap.add_argument(
        "--work",
        type=Path,
        default=ROOT / "benchmarks" / "results" / "flow_parallel",
        help="project folder the flow runs in (artifacts/, checkpoints/)",
    )
    args = ap.parse_args()
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    work = args.work.resolve()
    work.mkdir(parents=True, exist_ok=True)
    from flows.pipeline import run_pipeline

    decl = declaration(work, args.steps)
    # build the shared upstream nodes (and warm the temporary Prefect API) once
    run_pipeline(str(decl), work, track=False, max_parallel=1)
    serial, parallel, prints = [], [], {}
    for _ in range(args.repeats):
        serial.append(timed_flow(work, decl, 1))
        prints["serial"] = fingerprints(work)
        parallel.append(timed_flow(work, decl, args.parallel))
        prints["parallel"] = fingerprints(work)
    same = prints["serial"] == prints["parallel"]
    ratios = [s / p for s, p in zip(serial, parallel, strict=True)]
    steps = args.steps or 60
    print(
        f"\n## Prefect flow: {len(prints['serial'])} independent recover nodes "
        f"({steps} steps each)\n"
    )
    print(f"CPU cores: {os.cpu_count()}; repeats: {args.repeats}\n")
    print("| mode | wall s (each run) | median |")
    print("|---|---|---|")
    for name, xs in (
        ("serial (max_parallel=1)", serial),
        (
            f"parallel (max_parallel={args.parallel})",
            parallel,
        ),
    ):
        runs = ", ".join(f"{x:.1f}" for x in xs)
        print(f"| {name} | {runs} | {statistics.median(xs):.1f} |")
    print(
        f"\nserial / parallel wall-time ratio: median {statistics.median(ratios):.2f} "
        f"(runs: {', '.join(f'{r:.2f}' for r in ratios)}); "
        f"identical fingerprints: {same}"
    )
    if not same:
        raise SystemExit("parallel and serial runs published different outputs")


if __name__ == "__main__":
    main()
