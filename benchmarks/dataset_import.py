"""Importing a large instruction JSONL: the dataset kind's ``files`` method
against HF ``datasets`` alone, in one run.

The file has ``--rows`` distinct instruction records (default 1,000,000). Each
side runs in a fresh spawned process with a fresh datasets cache:

* carp: ``files`` through the kind's ``run`` (load, map, check every row,
  content ids, exact dedup, streamed ``data.jsonl`` + ``dataset.json``);
* baseline: ``datasets.load_dataset("json", data_files=..., cache_dir=tmp)``
  and ``Dataset.to_json(lines=True)``, no checks.

Printed: wall time of each (the fastest of ``--repeat`` runs, imports
excluded on both sides) and their ratio, the ratio of their CPU times (less
sensitive to other load on the machine) (carp / baseline), each side's peak
RSS (``ru_maxrss``: includes the memory-mapped Arrow pages the process
touched) and its peak anonymous memory (RSS minus file-backed pages, sampled),
at ``--rows`` and at a quarter of them, to show how memory grows with rows.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/dataset_import.py --rows 200000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import multiprocessing as mp
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")


def make_jsonl(path: Path, rows: int) -> Path:
    """``rows`` distinct Alpaca-like records (about 190 bytes each)."""
    with open(path, "w", encoding="utf-8") as f:
        for i in range(rows):
            w = [WORDS[(i >> k) % len(WORDS)] for k in range(0, 24, 3)]
            rec = {
                "instruction": f"Summarise note {i} about {' '.join(w[:4])}.",
                "input": f"{' '.join(w)} ({i % 97})" if i % 3 else "",
                "output": f"Note {i} is about {w[0]} and {w[5]}; {w[2]} matters.",
                "family": WORDS[i % 5],
            }
            f.write(json.dumps(rec) + "\n")
    return path


def run_carp(src: str, work: str, q) -> None:
    import datasets  # noqa: F401  (imported before the clock, as the baseline's)

    from pipelines.contract import RunContext
    from stages.dataset import KIND, METHODS

    t, cpu = time.perf_counter(), time.process_time()
    params = METHODS.load("files").Params(path=src)
    res = KIND.run(params, {}, Path(work) / "carp", RunContext(seed=0))
    q.put(
        {
            "seconds": time.perf_counter() - t,
            "cpu_seconds": time.process_time() - cpu,
            "rows": res.metrics["records_written"],
            "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
    )


def run_baseline(src: str, work: str, q) -> None:
    from datasets import load_dataset

    t, cpu = time.perf_counter(), time.process_time()
    ds = load_dataset(
        "json", data_files=src, split="train", cache_dir=str(Path(work) / "cache")
    )
    ds.to_json(str(Path(work) / "baseline.jsonl"), lines=True, force_ascii=False)
    q.put(
        {
            "seconds": time.perf_counter() - t,
            "cpu_seconds": time.process_time() - cpu,
            "rows": len(ds),
            "maxrss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
    )


def measure(target, *args, timeout: float) -> dict:
    """Run ``target`` in a fresh spawned process; its result plus the sampled
    peak of RSS minus file-backed pages (anonymous memory)."""
    import psutil

    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    t = time.perf_counter()
    p.start()
    anon = 0
    while p.is_alive() and time.perf_counter() - t < timeout:
        with contextlib.suppress(psutil.Error):
            m = psutil.Process(p.pid).memory_info()
            anon = max(anon, m.rss - m.shared)
        p.join(0.2)
        if not q.empty():
            break
    out = q.get() if not q.empty() else None
    if p.is_alive() and out is None:
        p.kill()
        return {"error": f"timeout {timeout:.0f}s"}
    p.join()
    if out is None:
        return {"error": f"exit code {p.exitcode}"}
    return {**out, "anon_peak_gb": anon / 2**30}


def compare(src: Path, rows: int, timeout: float, repeat: int) -> dict:
    out: dict = {"rows": rows}
    runs: dict[str, list[dict]] = {"carp": [], "baseline": []}
    for rep in range(repeat):  # alternate the sides; keep each side's fastest run
        for name, target in (("baseline", run_baseline), ("carp", run_carp)):
            work = Path(tempfile.mkdtemp(prefix=f"carp-bench-{name}-"))
            try:
                got = measure(target, str(src), str(work), timeout=timeout)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(f"  {name:8s} {rows:>9,} rows, run {rep + 1}: {got}", flush=True)
            if "seconds" in got:
                runs[name].append(got)
            best = out.get(name)
            if best is None or got.get("seconds", 1e9) < best.get("seconds", 1e9):
                out[name] = got
    if "seconds" in out["carp"] and "seconds" in out["baseline"]:
        out["ratio"] = out["carp"]["seconds"] / out["baseline"]["seconds"]
        cpu = min(r["cpu_seconds"] for r in runs["carp"])
        out["cpu_ratio"] = cpu / min(r["cpu_seconds"] for r in runs["baseline"])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--timeout", type=float, default=1200)
    ap.add_argument("--repeat", type=int, default=2, help="runs per side (fastest)")
    ap.add_argument("--json", type=Path, help="also write the figures here")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="carp-bench-data-"))
    try:
        results = []
        for rows in (args.rows, args.rows // 4):
            t = time.perf_counter()
            src = make_jsonl(tmp / f"rows{rows}.jsonl", rows)
            mb = src.stat().st_size / 2**20
            print(f"{rows:,} rows, {mb:.0f} MB ({time.perf_counter() - t:.1f} s)")
            results.append(compare(src, rows, args.timeout, args.repeat))
            src.unlink()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(
        "\nrows       carp s  datasets s  ratio  cpu ratio  carp RSS/anon GB  "
        "datasets RSS/anon GB"
    )
    for r in results:
        c, b = r["carp"], r["baseline"]
        if "ratio" not in r:
            print(f"{r['rows']:<10,} failed: carp {c} baseline {b}")
            continue
        print(
            f"{r['rows']:<10,} {c['seconds']:6.1f}  {b['seconds']:10.1f}  "
            f"{r['ratio']:5.2f}  {r['cpu_ratio']:9.2f}  "
            f"{c['maxrss_gb']:7.2f}/{c['anon_peak_gb']:.2f}"
            f"{b['maxrss_gb']:14.2f}/{b['anon_peak_gb']:.2f}"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
