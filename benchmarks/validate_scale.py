"""`carp validate` on a long declaration: a chain of N prune stages declared in
reverse order (the worst case for ordering), against the same chain of
``--baseline`` stages measured in the same run; reports seconds and the
per-stage ratio (1.0 = linear). Target: N = 2,000 in under 2 s."""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import statistics
import time
from pathlib import Path

import yaml

from pipelines.cli import main

RESULTS = Path(__file__).resolve().parent / "results"


def chain(n: int) -> dict:
    """world -> base -> p0 -> ... -> p{n-3}, written last stage first."""
    stages = {
        f"p{i}": {
            "kind": "prune",
            "method": "magnitude",
            "model": f"p{i - 1}" if i else "base",
        }
        for i in range(n - 3, -1, -1)
    }
    stages["base"] = {"kind": "pretrain", "data": "world"}
    stages["world"] = {"kind": "world"}
    return {"pipeline": f"chain{n}", "stages": stages}


def seconds(n: int, folder: Path, repeats: int) -> list[tuple[float, float]]:
    """(wall, CPU) seconds of each `carp validate` of an n-stage chain."""
    f = folder / f"chain{n}.yaml"
    f.write_text(yaml.safe_dump(chain(n), sort_keys=False))
    out = []
    for _ in range(repeats):
        t0, c0 = time.perf_counter(), time.process_time()
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["validate", str(f)]) == 0
        out.append((time.perf_counter() - t0, time.process_time() - c0))
    return out


def run(n: int, baseline: int, repeats: int) -> dict:
    work = RESULTS / "validate_scale"
    work.mkdir(parents=True, exist_ok=True)
    seconds(baseline, work, 1)  # warm imports and registries
    base = seconds(baseline, work, repeats)
    big = seconds(n, work, repeats)
    b = statistics.median(w for w, _ in base)
    g = statistics.median(w for w, _ in big)
    cpu = statistics.median(c for _, c in big)
    return {
        "stages": n,
        "baseline_stages": baseline,
        "seconds": g,
        "seconds_min_max": [min(w for w, _ in big), max(w for w, _ in big)],
        "cpu_seconds": cpu,
        "baseline_seconds": b,
        "per_stage_ratio": (g / n) / (b / baseline),
        "under_2s": g < 2.0,
    }


def report(r: dict) -> str:
    return (
        "| declaration | `carp validate` wall s, median (min–max) | CPU s "
        "| per-stage ratio |\n"
        "|---|---|---|---|\n"
        f"| {r['baseline_stages']}-stage chain (baseline) "
        f"| {r['baseline_seconds']:.3f} | | 1.00 |\n"
        f"| {r['stages']}-stage chain, reversed | {r['seconds']:.3f} "
        f"({r['seconds_min_max'][0]:.3f}–{r['seconds_min_max'][1]:.3f}) "
        f"| {r['cpu_seconds']:.3f} | {r['per_stage_ratio']:.2f} |\n"
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--stages", type=int, default=2000)
    ap.add_argument("--baseline", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    result = run(a.stages, a.baseline, a.repeats)
    text = report(result)
    (RESULTS / "validate_scale.md").write_text(text)
    (RESULTS / "validate_scale.json").write_text(json.dumps(result, indent=2))
    print(text)
