"""The merge stage body: check the inputs, then merge and write one tensor at a
time (see __init__.run)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import time
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext, StageResult
from stages.common.sparsity import sparsity_summary
from stages.merge.inputs import MergeError, ModelSource, check_compatible

# files of a model folder that are not weights: kept from the reference model
_COPIED = re.compile(
    r"^(config\.json|generation_config\.json|tokenizer.*|special_tokens_map\.json"
    r"|added_tokens\.json|vocab\..*|merges\.txt|.*\.model|chat_template\..*)$"
)


def per_model(value: Any, names: list[str], field: str, stage: str) -> list[float]:
    """Resolve a scalar or a mapping (by node name, then by stage name) to one
    value per input node."""
    if not isinstance(value, dict):
        return [float(value)] * len(names)
    out = []
    for n in names:
        key = n if n in value else n.split("@", 1)[0]
        if key not in value:
            raise MergeError(
                f"stage '{stage}': {field} has no value for model '{n}' "
                f"(keys: {', '.join(sorted(value))})"
            )
        out.append(float(value[key]))
    return out


def tensor_seed(seed: int, name: str) -> int:
    """A per-tensor seed from the stage seed and the tensor name (stable)."""
    return int(hashlib.sha256(f"{seed}:{name}".encode()).hexdigest()[:15], 16)


def _sources(
    params: Any, inputs: dict[str, Any], stage: str
) -> tuple[list[ModelSource], ModelSource | None]:
    dirs = [Path(p) for p in inputs["models"]]
    from stages.merge import check_inputs

    for _, msg in check_inputs(params, {"models": [d.name for d in dirs]}):
        raise MergeError(f"stage '{stage}': {msg}")
    base = inputs.get("base")
    try:
        models = [ModelSource(d, d.name) for d in dirs]
        return models, ModelSource(Path(base), Path(base).name) if base else None
    except MergeError as e:
        raise MergeError(f"stage '{stage}': {e}") from None


def _copy_side_files(src: Path, out_dir: Path, dtype: str | None) -> None:
    for f in sorted(src.iterdir()):
        if f.is_file() and _COPIED.match(f.name):
            shutil.copy2(f, out_dir / f.name)
    cfg = out_dir / "config.json"
    if dtype and cfg.exists():
        data = json.loads(cfg.read_text())
        data["dtype"] = dtype
        data.pop("torch_dtype", None)
        cfg.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def execute(
    params: Any, inputs: dict[str, Any], out_dir: Path, ctx: RunContext
) -> StageResult:
    import torch

    from stages.common.maskio import pack, write_masks
    from stages.common.memory import peak_rss_mb
    from stages.common.stream import WEIGHTS_FILE, tensor_bytes, write_safetensors
    from stages.merge import METHODS
    from stages.merge import masks as M
    from stages.merge.job import TensorJob

    t0 = time.perf_counter()
    method = METHODS.load(params.method)
    models, base = _sources(params, inputs, ctx.name)
    ref = base or models[0]
    names = check_compatible(ctx.name, ref, models)  # before any compute
    node_names = [m.name for m in models]
    weights = per_model(getattr(params, "weight", 1.0), node_names, "weight", ctx.name)
    density = getattr(params, "density", None)
    densities = (
        per_model(density, node_names, "density", ctx.name)
        if density is not None
        else None
    )
    inputs_all = [*models, *([base] if base else [])]
    ref_index = len(models) if base else 0
    rs = params.resparsify
    rs_nm = None
    if rs is not None:
        from stages.prune.pattern import parse_pattern

        rs_nm = parse_pattern(rs.pattern)

    out_dir.mkdir(parents=True, exist_ok=True)
    specs: dict[str, tuple[str, tuple[int, ...], int]] = {}
    out_dtypes: dict[str, Any] = {}
    for name in names:
        dt = getattr(torch, params.dtype or ref.dtype(name))
        shape = ref.specs[name][1]
        n = 1
        for d in shape:
            n *= d
        code = {"float32": "F32", "float16": "F16", "bfloat16": "BF16"}.get(
            str(dt).removeprefix("torch."), ref.specs[name][0]
        )
        specs[name] = (code, shape, n * torch.empty((), dtype=dt).element_size())
        out_dtypes[name] = dt

    packed: dict[str, Any] = {}
    zeros: dict[str, tuple[int, int]] = {}
    nm_kept: dict[str, list[int]] = {}
    bar = iter(ctx.progress(range(len(names)), desc=params.method, total=len(names)))

    def produce(name: str) -> Any:
        next(bar, None)
        src_dtype = ref.dtype(name)
        if not src_dtype.startswith(("float", "bfloat")):
            return tensor_bytes(ref.read(name))  # integer buffers: the reference's
        job = TensorJob(
            name=name,
            tensors=[m.read(name).float() for m in models],
            base=base.read(name).float() if base else None,
            weights=weights,
            densities=densities,
            seed=tensor_seed(ctx.seed, name),
        )
        merged = method.merge_tensor(job, params)
        del job
        in_masks = [s.mask(name) for s in inputs_all]
        keep = M.policy_mask(params.mask, in_masks, ref_index)
        nm = M.common_nm(in_masks) if keep is not None else None
        if nm is not None:
            keep = M.enforce_nm(merged, keep, *nm)
            nm_kept.setdefault(f"{nm[0]}:{nm[1]}", []).append(1)
        if rs is not None and (
            keep is not None or M.is_decoder_linear(name, tuple(merged.shape))
        ):
            keep = M.resparsify_mask(merged, keep, rs.sparsity, rs_nm)
        if keep is not None:
            merged = merged * keep.to(merged.dtype)
            packed[name] = pack(keep)
        if keep is not None or M.is_decoder_linear(name, tuple(merged.shape)):
            zeros[name] = (
                merged.numel() - int(torch.count_nonzero(merged)),
                merged.numel(),
            )
        return tensor_bytes(merged.to(out_dtypes[name]))

    write_safetensors(out_dir / WEIGHTS_FILE, specs, produce, metadata={"format": "pt"})
    if packed:
        from stages.common.io import MASKS_FILE

        write_masks(packed, out_dir / MASKS_FILE)
    _copy_side_files(ref.folder, out_dir, params.dtype)

    metrics, per_module = sparsity_summary(zeros)
    metrics["models"] = float(len(models))
    metrics["tensors"] = float(len(names))
    metrics["time_s"] = time.perf_counter() - t0
    metrics["peak_rss_mb"] = peak_rss_mb()
    manifest = {
        "method": params.method,
        "models": node_names,
        "base": base.name if base else None,
        "weights": dict(zip(node_names, weights, strict=True)),
        "densities": dict(zip(node_names, densities, strict=True))
        if densities
        else None,
        "mask": params.mask,
        "masks_file": "masks.safetensors" if packed else None,
        "nm": sorted(nm_kept) or None,
        "resparsify": rs.model_dump() if rs else None,
        "sparsity_per_module": per_module,
    }
    summary = (
        f"{params.method}: {len(models)} models -> {len(names)} tensors, "
        f"sparsity {metrics['sparsity']:.3f}, {metrics['time_s']:.1f}s, "
        f"peak RSS {metrics['peak_rss_mb']:.0f} MiB"
    )
    return StageResult(metrics=metrics, summary=summary, extra_manifest=manifest)
