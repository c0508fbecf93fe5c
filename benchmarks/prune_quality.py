"""Quality of every prune method on a base model: perplexity on the world's
held-out text and per-family exact match, at 50% unstructured and 2:4
(magnitude, Wanda, SparseGPT) and ~25% of parameters removed (width, depth).

Builds the world and the base model through their stages' ``run`` (a few CPU
minutes) unless ``--world``/``--base`` point at existing artifact folders, which
are copied into the work folder first (never modified). Pruned models are
cached under a folder named by the base checkpoint's hash, so a new base never
reuses models pruned from an old one. Calibration: ``nsamples`` records (the
stage's default ``calib_format``) of the world's pool (its ``data.jsonl``), as
the prune stage's ``calib: world``.

    .venv/bin/python benchmarks/prune_quality.py \
        [--world benchmarks/results/assets/world] \
        [--base benchmarks/results/assets/base] [--threads 1] [--removed 0.25]

(benchmarks/results/assets/ holds the default world and base model once a select
benchmark has built them; so do ``artifacts/world`` and ``artifacts/base`` after
``make demo``.) Work folder: benchmarks/results/quality/ (``--work``). Writes
benchmarks/results/prune_quality.md (a markdown table) and .json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipelines.contract import RunContext  # noqa: E402

MASK_CONFIGS: list[tuple[str, str, dict]] = [
    ("magnitude 50%", "magnitude", {"sparsity": 0.5}),
    ("magnitude 50% (per row)", "magnitude", {"sparsity": 0.5, "scope": "row"}),
    ("wanda 50%", "wanda", {"sparsity": 0.5}),
    ("sparsegpt 50%", "sparsegpt", {"sparsity": 0.5}),
    ("magnitude 2:4", "magnitude", {"pattern": "2:4"}),
    ("wanda 2:4", "wanda", {"pattern": "2:4"}),
    ("sparsegpt 2:4", "sparsegpt", {"pattern": "2:4"}),
]


def structured_configs(base: Path, removed: float) -> list[tuple[str, str, dict]]:
    """Width and depth settings that remove about ``removed`` of all parameters.

    Width's ``sparsity`` is a fraction of the blocks' linear weights, so it is
    scaled by (all parameters / block linear parameters); depth removes whole
    blocks, so it takes the block count nearest to ``removed``.
    """
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(base))
    layers = model.get_decoder().layers
    total = sum(p.numel() for p in model.parameters())
    linear = sum(
        m.weight.numel()
        for blk in layers
        for m in blk.modules()
        if isinstance(m, torch.nn.Linear)
    )
    per_block = sum(p.numel() for p in layers[0].parameters())
    width_s = min(removed * total / linear, 0.9)
    n_blocks = max(1, round(removed * total / per_block))
    depth_frac = n_blocks * per_block / total
    pct = f"{removed:.0%}"
    return [
        (f"width {pct} (l2)", "width", {"sparsity": width_s}),
        (
            f"width {pct} (taylor)",
            "width",
            {"sparsity": width_s, "importance": "taylor"},
        ),
        (f"depth {n_blocks} blocks ({depth_frac:.0%})", "depth", {"blocks": n_blocks}),
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


def copy_in(src: Path, dst: Path) -> Path:
    """A private copy of an existing artifact folder (the original stays as is)."""
    if not dst.exists():
        tmp = dst.with_name(dst.name + ".tmp")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(src, tmp)
        tmp.rename(dst)
    return dst


def file_hash(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


def score(model_dir: Path, world: Path, max_per_family: int | None) -> dict:
    """Perplexity and per-family EM, cached in ``model_dir`` (a benchmark copy)."""
    cache = model_dir / f"scores_{world.name}_{max_per_family}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    from stages.common.io import load_model, load_tokenizer
    from stages.evaluate import exact_match, perplexity
    from stages.evaluate.world import Params as EvalParams

    ev = EvalParams(
        models=["m"],
        data="world",
        max_samples_per_family=max_per_family,
    )
    model, tok = load_model(model_dir).eval(), load_tokenizer(model_dir)
    ctx = RunContext(name=model_dir.name)
    out = perplexity.score(model, tok, world, ev, ctx)
    out.update(exact_match.score(model, tok, world, ev, ctx))
    cache.write_text(json.dumps(out))
    return out


def table(rows: list[dict]) -> str:
    fams = sorted(
        k[3:] for k in rows[0] if k.startswith("em/") and k not in ("em/mean",)
    )
    head = "| config | removed params | sparsity | ppl | ppl / base | EM mean | "
    head += " | ".join(fams) + " | prune s |"
    lines = [head, "|---" * (7 + len(fams)) + "|"]
    b = rows[0]
    for r in rows:
        em = " | ".join(f"{r.get('em/' + f, float('nan')):.2f}" for f in fams)
        lines.append(
            f"| {r['config']} | {r.get('params_removed_frac', 0):.1%} | "
            f"{r.get('sparsity', 0):.1%} | {r['ppl']:.3f} | "
            f"{r['ppl'] / b['ppl']:.2f} | {r['em/mean']:.3f} | {em} | "
            f"{r.get('time_s', 0):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / "benchmarks/results/quality")
    ap.add_argument("--world", type=Path, help="existing world artifact folder")
    ap.add_argument("--base", type=Path, help="existing base model folder")
    ap.add_argument("--nsamples", type=int, default=128)
    ap.add_argument("--seqlen", type=int, default=None)
    ap.add_argument("--removed", type=float, default=0.25)
    ap.add_argument("--max-per-family", type=int, default=None)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from stages import world as world_kind
    from stages.world import pretrain

    args.work.mkdir(parents=True, exist_ok=True)
    if args.world:
        tag = file_hash(args.world / "data.jsonl")
        world = copy_in(args.world, args.work / f"world_{tag}")
    else:
        world = build(
            "stages.world",
            world_kind.Params(method="synthetic"),
            {},
            args.work / "world",
        )
    if args.base:
        base = args.work / f"base_{file_hash(args.base / 'model.safetensors')}"
        copy_in(args.base, base)
    else:
        base = build(
            "stages.world.pretrain",
            pretrain.Params(method="llama", data="world"),
            {"data": world},
            args.work / "base",
        )
    pruned_dir = args.work / f"pruned_{file_hash(base / 'model.safetensors')}"
    from stages.prune import METHODS

    rows = [
        {
            "config": "base (dense)",
            "method": "-",
            **score(base, world, args.max_per_family),
        }
    ]
    print(f"base: ppl {rows[0]['ppl']:.3f} em {rows[0]['em/mean']:.3f}", flush=True)
    for label, method, kw in MASK_CONFIGS + structured_configs(base, args.removed):
        cls = METHODS.load(method).Params
        reads = "calib" in cls.model_fields and (
            cls.model_fields["calib"].is_required() or kw.get("importance") == "taylor"
        )
        params = cls(
            model="base",
            **({"calib": "world"} if reads else {}),
            nsamples=args.nsamples,
            seqlen=args.seqlen,
            **kw,
        )
        name = label.replace(" ", "_").translate(str.maketrans("", "", "%:()"))
        out = pruned_dir / name
        t0 = time.perf_counter()
        inputs = {"model": base, **({"calib": world} if reads else {})}
        build("stages.prune", params, inputs, out)
        metrics = json.loads((out / "metrics.json").read_text())
        rows.append(
            {
                "config": label,
                "method": method,
                "params": kw,
                **metrics,
                **score(out, world, args.max_per_family),
                "wall_s": time.perf_counter() - t0,
            }
        )
        print(
            f"{label}: ppl {rows[-1]['ppl']:.3f} em {rows[-1]['em/mean']:.3f}",
            flush=True,
        )

    text = table(rows)
    print(text)
    res = ROOT / "benchmarks/results"
    head = (
        f"`{' '.join(['python', *sys.argv])}` ({time.strftime('%Y-%m-%d %H:%M')}; "
        f"base {base.name}, calibration: {args.nsamples} records of the world pool)"
        "\n\n"
    )
    (res / "prune_quality.md").write_text(head + text + "\n")
    (res / "prune_quality.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
