"""PASER's JSD scoring throughput against a bare forward loop of both models
over the same length-bucketed batches, measured interleaved in one run.

* bare: the reference and pruned models' plain forward passes
  (``model(input_ids, attention_mask)``) only, on batches collated beforehand
  (no collation, no divergence, no cache);
* lean forward: the same forwards as the stage issues them (LM head only from
  the first response position on, no KV cache), still without collation or
  divergence: stage / lean isolates the stage's own overhead;
* loop: the stage's scoring loop ``scoring.lm_scores`` with the stage's JSD
  function (collation, both forwards, response JSD, cache writes) into an
  empty cache;
* end-to-end: ``paser.jsd_scores`` from an empty cache (tokenizer load,
  encoding, model loads, the loop, cache writes).

Ratio = records/s of a stage variant / records/s of the bare loop; the median of
``--repeats`` interleaved rounds. Models and pool default to the embedded
default world, base model and 50%-magnitude-pruned model in
benchmarks/results/assets/, built on first use (benchmarks/assets.py); the pool
is copied, never modified.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_jsd_throughput.py

Writes benchmarks/results/select_jsd_throughput.md and .json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("world", "base", "prune"):
        ap.add_argument(
            f"--{name}",
            type=Path,
            help=f"{name} artifact folder (default: benchmarks/results/assets/{name},"
            " built when missing)",
        )
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument(
        "--limit", type=int, default=0, help="first N pool records (0: all)"
    )
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    if not (a.world and a.base and a.prune):
        from benchmarks.assets import default_assets

        built = default_assets()
        a.world, a.base, a.prune = (
            a.world or built["world"],
            a.base or built["base"],
            a.prune or built["prune"],
        )
    import torch

    from pipelines.contract import RunContext
    from stages.common.io import read_dataset
    from stages.common.text import collate
    from stages.select.paser import Params, jsd_batch_fn, jsd_scores
    from stages.select.scoring import (
        encode_records,
        length_batches,
        lm_key,
        lm_scores,
        load_lm,
        response_logits,
    )

    torch.set_num_threads(a.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="jsd_work_", dir=RESULTS))
    pool_dir = work / "world"
    pool_dir.mkdir()
    for f in ("data.jsonl", "dataset.json"):
        shutil.copy(a.world / f, pool_dir / f)
    pool = read_dataset(pool_dir)
    if a.limit:
        pool = pool[: a.limit]
    p = Params(pool="world", model="prune", reference="base", budget=0.2, device="cpu")
    inputs = {"pool": pool_dir, "model": a.prune, "reference": a.base}
    from stages.common.io import load_tokenizer

    tok = load_tokenizer(a.prune)
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    enc = encode_records(tok, pool, p.max_len)
    keys = [lm_key(r) for r in pool]
    lengths = [len(ids) for ids, _ in enc]
    batches = length_batches(lengths, p.max_batch_tokens, p.max_batch)
    collated = [collate([enc[i] for i in b], pad) for b in batches]
    ref, pruned = load_lm(a.base, "cpu", p.dtype), load_lm(a.prune, "cpu", p.dtype)
    ctx = RunContext(name="jsd")
    n_tok = sum(lengths)
    padded = sum(c["input_ids"].numel() for c in collated)

    def bare() -> None:
        with torch.inference_mode():
            for c in collated:
                kw = {k: c[k] for k in ("input_ids", "attention_mask")}
                ref(**kw)
                pruned(**kw)

    def lean() -> None:
        with torch.inference_mode():
            for c in collated:
                response_logits(ref, c)
                response_logits(pruned, c)

    fn = jsd_batch_fn(ref, pruned)  # the stage's own batch function

    def loop() -> None:
        root = Path(tempfile.mkdtemp(dir=work))
        lm_scores(
            "jsd-x",
            enc,
            keys,
            root,
            1,
            fn,
            ctx,
            pad,
            p.max_batch_tokens,
            p.max_batch,
            "cpu",
        )

    def end_to_end() -> None:
        root = Path(tempfile.mkdtemp(dir=work))
        _, _, new = jsd_scores(p, pool, inputs, root, ctx, "cpu")
        if new != len(pool):
            raise RuntimeError("end-to-end run did not score every record")

    variants = {"bare": bare, "lean": lean, "loop": loop, "end_to_end": end_to_end}
    times: dict[str, list[float]] = {k: [] for k in variants}
    bare()  # warm-up (allocator, kernels)
    names = list(variants)
    for r in range(a.repeats):
        for name in names[r % 4 :] + names[: r % 4]:  # rotate the order
            t = time.perf_counter()
            variants[name]()
            times[name].append(time.perf_counter() - t)
        print(json.dumps({k: v[-1] for k, v in times.items()}), flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    res = {
        "records": len(pool),
        "tokens": n_tok,
        "padded_tokens": padded,
        "batches": len(batches),
        "threads": a.threads,
        "seconds": times,
        "median_s": med,
        "records_per_s": {k: len(pool) / v for k, v in med.items()},
        "ratio_loop": med["bare"] / med["loop"],
        "ratio_loop_vs_lean": med["lean"] / med["loop"],
        "ratio_end_to_end": med["bare"] / med["end_to_end"],
    }
    shutil.rmtree(work)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "select_jsd_throughput.json").write_text(json.dumps(res, indent=2))
    md = markdown(res, a)
    (RESULTS / "select_jsd_throughput.md").write_text(md)
    print(md)


def markdown(res: dict[str, Any], a: argparse.Namespace) -> str:
    rps = res["records_per_s"]
    rows = [
        ("bare forward loop (both models)", "bare", "1.00"),
        (
            "lean forward loop (as the stage calls them)",
            "lean",
            f"{res['median_s']['bare'] / res['median_s']['lean']:.2f}",
        ),
        (
            "stage scoring loop (lm_scores + response JSD)",
            "loop",
            f"{res['ratio_loop']:.2f}",
        ),
        (
            "stage end-to-end (jsd_scores: tokenize, load, loop, cache)",
            "end_to_end",
            f"{res['ratio_end_to_end']:.2f}",
        ),
    ]
    lines = [
        "# PASER JSD scoring throughput vs a bare forward loop",
        "",
        f"Command: `OMP_NUM_THREADS={a.threads} .venv/bin/python "
        f"benchmarks/select_jsd_throughput.py --repeats {a.repeats}` "
        f"(CPU, {a.threads} thread). Pool: {res['records']} records of "
        f"{a.world} ({res['tokens']} tokens, {res['padded_tokens']} padded, "
        f"{res['batches']} length-bucketed batches of <= 8192 padded tokens / 64 "
        f"records); models {a.base} and {a.prune}; median of {a.repeats} "
        "interleaved rounds.",
        "",
        "| variant | median s | records/s | ratio to bare |",
        "|---|---|---|---|",
    ]
    for label, k, ratio in rows:
        lines.append(f"| {label} | {res['median_s'][k]:.2f} | {rps[k]:.0f} | {ratio} |")
    lines += [
        "",
        "Target: ratio >= 0.70. Stage loop / lean forward loop (the stage's "
        f"own overhead: collation, JSD, cache): {res['ratio_loop_vs_lean']:.2f}.",
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
