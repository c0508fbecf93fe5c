"""Time and peak RSS of every prune method on three random-weight Llama models
built from config (small, medium, and large: 24 layers, ~345M parameters).

Each measurement runs in its own process (peak RSS is per process: VmHWM).
Baselines measured in the same run: ``import`` (python + torch + transformers
only), ``load+save`` (load the checkpoint and write it back with the stage's
streaming writer, no pruning) and ``load+save_pretrained`` (the same with
transformers' ``save_pretrained``, which also imports DeepSpeed). Ratios
printed: peak RSS / model size in memory, peak RSS / load+save peak, and time
/ load+save time. The target: Wanda/SparseGPT peak RSS on the large model
<= 1.3 x the model's own size, width taylor <= 2 x. Calibration: ``nsamples``
windows of ``seqlen`` tokens (``--calib-format windows``, the heavier case).

    .venv/bin/python benchmarks/prune_cost.py [--sizes small medium large]
        [--methods wanda sparsegpt] [--threads 1] [--nsamples 16] [--seqlen 256]
        [--calib-format windows|records]

Writes benchmarks/results/prune_cost.md and .json (``--results`` names them).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = {  # hidden, layers, heads, kv heads, intermediate, vocab
    "small": (256, 4, 4, 2, 688, 4096),
    "medium": (512, 12, 8, 4, 1376, 16000),
    "large": (1024, 24, 16, 8, 2816, 32000),
}
BASELINES = ("import", "load+save", "load+save_pretrained")
METHODS = [
    ("magnitude", {"sparsity": 0.5}),
    ("wanda", {"sparsity": 0.5}),
    ("sparsegpt", {"sparsity": 0.5}),
    ("sparsegpt 2:4", {"pattern": "2:4"}),
    ("width", {"sparsity": 0.25}),
    ("width taylor", {"sparsity": 0.25, "importance": "taylor"}),
    ("depth", {"sparsity": 0.25}),
]


def make_inputs(work: Path, size: str) -> tuple[Path, Path, int]:
    """Save a random-weight model (with a char tokenizer) and a small dataset."""
    import torch
    from transformers import LlamaForCausalLM

    from stages.common.io import write_dataset
    from tests.tiny import (
        char_tokenizer,
        llama_config,
        records,
        tiny_llama,
        write_checkpoint,
    )

    model_dir, data_dir = work / f"model_{size}", work / "data"
    hidden, layers, heads, kv, inter, vocab = SIZES[size]
    dims = dict(
        vocab_size=vocab,
        hidden=hidden,
        layers=layers,
        heads=heads,
        kv_heads=kv,
        intermediate=inter,
        max_positions=2048,
    )
    if not (model_dir / "config.json").exists():
        write_checkpoint(tiny_llama(**dims), char_tokenizer(), model_dir)
    if not (data_dir / "data.jsonl").exists():
        write_dataset(records(2000), data_dir, source="benchmark")
    with torch.device("meta"):
        n = sum(p.numel() for p in LlamaForCausalLM(llama_config(**dims)).parameters())
    return model_dir, data_dir, n


def child(args: argparse.Namespace) -> None:
    """One measurement in this process; prints a JSON line."""
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    out = Path(args.out)
    if args.child == "import":
        import transformers  # noqa: F401
    elif args.child == "load+save":  # the stage's own I/O, nothing pruned
        from stages.common.io import load_model, load_tokenizer
        from stages.prune.checkpoint import save_checkpoint

        save_checkpoint(load_model(Path(args.model)), load_tokenizer(args.model), out)
    elif args.child == "load+save_pretrained":  # transformers' writer, for reference
        from stages.common.io import load_model, load_tokenizer, save_model

        save_model(load_model(Path(args.model)), load_tokenizer(args.model), out)
    else:
        from pydantic import ValidationError

        from pipelines.contract import RunContext
        from stages.prune import METHODS as REG
        from stages.prune import run

        cls = REG.load(args.child.split()[0]).Params
        kw = dict(METHODS)[args.child]
        kw = dict(
            model="m",
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            calib_format=args.calib_format,
            **kw,
        )
        try:  # methods that read calibration data take it
            params = cls(calib="d", **kw)
        except ValidationError:  # magnitude, width with l1/l2 importance: refuse it
            params = cls(**kw)
        inputs = {"model": Path(args.model)}
        if getattr(params, "calib", None):
            inputs["calib"] = Path(args.data)
        run(params, inputs, out, RunContext(name=args.child))
    from stages.prune.stage import peak_rss_mb

    print(
        json.dumps({"time_s": time.perf_counter() - t0, "peak_rss_mb": peak_rss_mb()})
    )


def measure(what: str, model: Path, data: Path, args: argparse.Namespace) -> dict:
    import shutil

    out = args.work / "out"
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    cmd = [
        sys.executable,
        __file__,
        "--child",
        what,
        "--model",
        str(model),
        "--data",
        str(data),
        "--out",
        str(out),
        "--threads",
        str(args.threads),
        "--nsamples",
        str(args.nsamples),
        "--seqlen",
        str(args.seqlen),
        "--calib-format",
        args.calib_format,
    ]
    res = subprocess.run(cmd, capture_output=True, text=True)
    if res.returncode:
        print(res.stderr[-3000:], file=sys.stderr)
        return {"time_s": float("nan"), "peak_rss_mb": float("nan")}
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", nargs="+", default=list(SIZES), choices=list(SIZES))
    ap.add_argument("--methods", nargs="+", default=[m for m, _ in METHODS])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--nsamples", type=int, default=16)
    ap.add_argument("--seqlen", type=int, default=256)
    ap.add_argument(
        "--calib-format",
        default="windows",
        choices=["windows", "records"],
        help="windows (default): nsamples full windows of seqlen tokens, the "
        "heavier case; records: one short record per sample",
    )
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/cost")
    ap.add_argument(
        "--baselines",
        nargs="+",
        default=list(BASELINES),
        choices=list(BASELINES),
        help="baselines measured (load+save always: the ratios divide by it)",
    )
    ap.add_argument(
        "--results",
        default="prune_cost",
        help="file stem of the .md/.json written to benchmarks/results/ (separate "
        "names let runs go side by side, each with its own --work)",
    )
    ap.add_argument("--child")
    ap.add_argument("--model")
    ap.add_argument("--data")
    ap.add_argument("--out")
    args = ap.parse_args()
    if args.child:
        return child(args)

    rows = []
    for size in args.sizes:
        model, data, n = make_inputs(args.work, size)
        mb = n * 4 / 2**20
        wanted = dict.fromkeys(["load+save", *args.baselines])
        base = {w: measure(w, model, data, args) for w in wanted}
        print(
            f"{size}: {n / 1e6:.0f}M params, {mb:.0f} MiB fp32; baselines {base}",
            flush=True,
        )
        for what in [*[b for b in BASELINES if b in base], *args.methods]:
            r = base.get(what) or measure(what, model, data, args)
            row = {
                "size": size,
                "params_m": n / 1e6,
                "model_mb": mb,
                "what": what,
                **r,
                "rss_over_model": r["peak_rss_mb"] / mb,
                "rss_over_loadsave": r["peak_rss_mb"]
                / base["load+save"]["peak_rss_mb"],
                "time_over_loadsave": r["time_s"] / base["load+save"]["time_s"],
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
    lines = [
        "| size | params | method | time s | x load+save | peak RSS MiB | "
        "RSS / model | RSS / load+save |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['size']} | {r['params_m']:.0f}M | {r['what']} | {r['time_s']:.1f} | "
            f"{r['time_over_loadsave']:.2f} | {r['peak_rss_mb']:.0f} | "
            f"{r['rss_over_model']:.2f} | {r['rss_over_loadsave']:.2f} |"
        )
    table = "\n".join(lines)
    print(table)
    head = (
        f"`{' '.join(['python', *sys.argv])}` ({time.strftime('%Y-%m-%d %H:%M')}, "
        f"{args.threads} thread(s), nsamples {args.nsamples}, seqlen {args.seqlen}, "
        f"calibration {args.calib_format}; "
        "peak RSS = VmHWM of the measured process)\n\n"
    )
    results = ROOT / "benchmarks" / "results"
    results.mkdir(parents=True, exist_ok=True)
    (results / f"{args.results}.md").write_text(head + table + "\n")
    (results / f"{args.results}.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
