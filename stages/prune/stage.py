"""The prune stage body: load, call the method, save, report (see __init__.run)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext, StageResult
from stages.common.maskio import write_masks
from stages.common.memory import peak_rss_mb
from stages.prune.calib import Calibration, dataset_shape, resolve_format
from stages.prune.checkpoint import save_checkpoint
from stages.prune.targets import Pruned


def nonzero_count(t: Any) -> int:
    """Non-zeros of ``t`` (``count_nonzero``: ``(t != 0).sum()`` would widen a
    bool copy to int64), counted a chunk at a time with each chunk's clean
    pages released after: counting must not make the mapped checkpoint, nor
    one large tensor of it, resident (see stages.common.memory.release_pages)."""
    import torch

    from stages.common.memory import release_pages
    from stages.common.stream import CHUNK_BYTES

    flat = t.reshape(-1)
    step = max(CHUNK_BYTES // max(t.element_size(), 1), 1)
    n = 0
    for s in range(0, flat.numel(), step):
        n += int(torch.count_nonzero(flat[s : s + step]))
        release_pages(t, s * t.element_size(), (s + step) * t.element_size())
    release_pages(t)
    return n


def zero_counts(model: Any, names: list[str] | None = None) -> dict[str, tuple]:
    """(zeros, numel) of the weight of each named module (default: every
    ``nn.Linear``)."""
    import torch

    mods = dict(model.named_modules())
    if names is None:
        names = [n for n, m in mods.items() if isinstance(m, torch.nn.Linear)]
    counts = {}
    for name in names:
        w = mods[name].weight
        counts[name] = (w.numel() - nonzero_count(w), w.numel())
    return counts


def sparsity_metrics(
    model: Any, names: list[str]
) -> tuple[dict[str, float], dict[str, float]]:
    """Zero fraction of the pruned weights: global, per decoder block (metrics)
    and per module (manifest)."""
    from stages.common.sparsity import sparsity_summary

    return sparsity_summary(zero_counts(model, names))


def model_context(config: Any, tokenizer: Any) -> int:
    """The longest input the model was trained for: ``max_position_embeddings``,
    or the tokenizer's ``model_max_length`` when that is smaller (HF sets it to
    a huge sentinel when unknown)."""
    ctx = getattr(config, "max_position_embeddings", None) or 2048
    tok_max = getattr(tokenizer, "model_max_length", None)
    if isinstance(tok_max, int) and 1 < tok_max < ctx:
        ctx = tok_max
    return int(ctx)


def _tokenizer(model_dir: Path, calib_dir: Path | None) -> Any:
    """The model folder's tokenizer, else a world's ``tokenizer/`` given as
    ``calib``, else None (methods without calibration need none)."""
    from stages.common.io import load_tokenizer

    files = ("tokenizer.json", "tokenizer_config.json")
    for d in (model_dir, calib_dir / "tokenizer" if calib_dir else None):
        if d is not None and any((d / f).exists() for f in files):
            return load_tokenizer(d)
    return None


def execute(
    params: Any, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    import torch

    from stages.common import io
    from stages.prune import METHODS
    from stages.prune.layerwise import release_memory

    t0 = time.perf_counter()
    seed = ctx.seed
    torch.manual_seed(seed)
    method = METHODS.load(params.method)
    model_dir = Path(inputs["model"])
    model = io.load_model(model_dir, dtype=getattr(torch, params.dtype))
    from stages.common.arch import check_model

    check_model(model)  # a named refusal, not a failure deep in a method
    model.eval()
    calib_dir = Path(inputs["calib"]) if inputs.get("calib") else None
    tok = _tokenizer(model_dir, calib_dir)
    context = model_context(model.config, tok)
    fmt = resolve_format(params.calib_format, dataset_shape(calib_dir))
    calib = Calibration(
        calib_dir,
        tok,
        params.nsamples,
        params.seqlen or (context if fmt == "records" else min(2048, context)),
        seed,
        fmt,
        params.template,
    )
    before = sum(p.numel() for p in model.parameters())
    zeros_before = zero_counts(model)  # an already sparse input keeps its zeros

    result: Pruned = method.apply(model, params, calib, ctx)

    after = sum(p.numel() for p in model.parameters())
    nonzero = sum(nonzero_count(p.data) for p in model.parameters())
    pruned = list(result.masks)
    has_masks = bool(pruned)
    if has_masks:  # written and freed before the model is saved: the save
        # faults in every page of the model, the peak of the whole stage
        write_masks(
            {f"{k}.weight": v for k, v in result.masks.items()}, out_dir / io.MASKS_FILE
        )
        result.masks.clear()
    metrics: dict[str, float] = {
        "params_before": float(before),
        "params_after": float(after),
        "params_nonzero_after": float(nonzero),
        "params_removed_frac": 1 - after / before,
    }
    per_module: dict[str, float] = {}
    if not result.structured:
        sp, per_module = sparsity_metrics(model, pruned)
        metrics.update(sp)
        z, n = (sum(zeros_before[k][i] for k in pruned) for i in (0, 1))
        metrics["sparsity_before"] = z / n
    metrics.update(result.metrics)
    calib.release()
    release_memory()  # freed temporaries of the pruning go back before the save
    save_checkpoint(model, tok, out_dir)
    metrics["time_s"] = time.perf_counter() - t0
    metrics["peak_rss_mb"] = peak_rss_mb()
    if torch.cuda.is_available():
        metrics["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    from stages.prune.layerwise import resolve_device

    manifest = {
        "method": params.method,
        "pattern": params.pattern,
        "nm": list(params.nm) if params.nm else None,
        "masks_file": io.MASKS_FILE if has_masks else None,
        "calibration": calib.fingerprint,
        "sparsity_per_module": per_module,
        "device": str(resolve_device(params.device)),  # where blocks ran
        "dtype": params.dtype,
        **result.manifest,
    }
    summary = (
        f"{params.method}: params {before:,} -> {after:,} "
        f"(nonzero {nonzero:,}), {metrics['time_s']:.1f}s, "
        f"peak RSS {metrics['peak_rss_mb']:.0f} MiB"
    )
    return StageResult(metrics=metrics, summary=summary, extra_manifest=manifest)
