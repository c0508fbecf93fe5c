"""What every training builder (recover, unlearn) does with its inputs: the
resume fingerprint of a job, the keep-masks of a sparse model and the export
of the trained model with its zeros pinned and its mask file copied through."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

# Params that change how often we save, not what is trained.
NOT_FINGERPRINTED = ("checkpoint_every", "keep_checkpoints")


def folder_identity(folder: Path) -> str:
    """The engine's output fingerprint when present, else names/sizes/mtimes."""
    man = folder / "carp.json"
    if man.exists():
        fp = json.loads(man.read_text()).get("fingerprint")
        if fp:
            return str(fp)
    h = hashlib.sha256()
    for f in sorted(folder.rglob("*")):
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(folder)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()


def input_identity(job: dict[str, Any], name: str) -> str:
    """Content identity of input ``name``: the fingerprint the engine handed
    the stage (``ctx.input_fingerprints``), else one read off the folder."""
    given = (job.get("input_fingerprints") or {}).get(name)
    if given and not isinstance(given, list):
        return str(given)
    return folder_identity(Path(job["inputs"][name]))


def job_fingerprint(job: dict[str, Any]) -> str:
    """What a checkpoint must have been made with to be resumed from."""
    params = {k: v for k, v in job["params"].items() if k not in NOT_FINGERPRINTED}
    ins = {k: input_identity(job, k) for k, v in job["inputs"].items() if v}
    blob = json.dumps(
        {"params": params, "inputs": ins, "seed": job["seed"]}, sort_keys=True
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def resolve_masks(mode: str, model: Any, model_dir: Path) -> dict[str, Any]:
    """Keep-masks by parameter name for ``mask: keep|infer|none``."""
    from stages.common.io import load_masks

    if mode == "none":
        return {}
    if mode == "keep":
        return {k: v.bool() for k, v in load_masks(model_dir).items()}
    return {
        n: p.detach() != 0
        for n, p in model.named_parameters()
        if p.ndim == 2 and bool((p == 0).any()) and "embed" not in n
    }


def save_trained(
    model: Any, masks: dict[str, Any], tok: Any, out_dir: Path
) -> dict[str, float]:
    """Pin the zeros (exact +0.0), save model + tokenizer + masks; mask metrics."""
    from stages.common.io import save_masks, save_model
    from stages.common.train.masking import reapply

    reapply(model, masks)
    save_model(model, tok, out_dir)
    out: dict[str, float] = {}
    if masks:
        save_masks(masks, out_dir)
        kept = sum(int(m.sum()) for m in masks.values())
        size = sum(m.numel() for m in masks.values())
        out["masked_sparsity"] = 1.0 - kept / size
    return out
