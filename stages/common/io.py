"""Artifact I/O: HF checkpoints, pruning masks and JSONL datasets.

Safetensors only; ``trust_remote_code`` stays off unless the model's manifest
records it as declared (:func:`trusts_remote_code`).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

MASKS_FILE = "masks.safetensors"
DATA_FILE = "data.jsonl"
DATASET_META = "dataset.json"


class CorruptDataError(ValueError):
    """A model or data file that does not load; the message names the file
    (and, for JSONL, the line)."""


def trusts_remote_code(path: Path) -> bool:
    """Whether the model folder's manifest (``carp.json``) records
    ``trust_remote_code: true``: declared on its ``pretrained`` stage and
    carried by every model made from it. Anything else, no remote code."""
    try:
        manifest = json.loads((Path(path) / "carp.json").read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and manifest.get("trust_remote_code") is True


def load_model(
    path: Path, dtype: Any = None, trust_remote_code: bool | None = None
) -> Any:
    """Load an HF causal LM from a local folder (no hub access); the model's own
    code only when its manifest records it as declared (or when asked)."""
    import torch
    from transformers import AutoModelForCausalLM

    if trust_remote_code is None:
        trust_remote_code = trusts_remote_code(path)
    try:
        return AutoModelForCausalLM.from_pretrained(
            str(path),
            dtype=dtype or torch.float32,
            trust_remote_code=trust_remote_code,
            local_files_only=True,
        )
    except Exception as e:  # noqa: BLE001 - safetensors has its own types
        first = (str(e).strip().splitlines() or [""])[0][:300]
        raise CorruptDataError(
            f"{path}: cannot load the model ({type(e).__name__}: {first}); check "
            "that config.json and *.safetensors are complete (a truncated copy? "
            "`dvc checkout` restores a tracked one)"
        ) from e


def load_tokenizer(path: Path, trust_remote_code: bool | None = None) -> Any:
    from transformers import AutoTokenizer

    if trust_remote_code is None:
        trust_remote_code = trusts_remote_code(path)

    return AutoTokenizer.from_pretrained(
        str(path), trust_remote_code=trust_remote_code, local_files_only=True
    )


def save_model(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """Write ``config.json``, ``model.safetensors`` and the tokenizer."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out_dir), safe_serialization=True)
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))


def save_masks(masks: dict[str, Any], out_dir: Path) -> None:
    """Save boolean keep-masks (True = weight kept) keyed by parameter name."""
    from safetensors.torch import save_file

    save_file(
        {k: v.to("cpu").bool().contiguous() for k, v in masks.items()},
        str(out_dir / MASKS_FILE),
    )


def load_masks(model_dir: Path) -> dict[str, Any]:
    """Keep-masks of a sparse model, or ``{}`` for a dense one."""
    from safetensors.torch import load_file

    f = Path(model_dir) / MASKS_FILE
    return load_file(str(f)) if f.exists() else {}


def apply_masks(model: Any, masks: dict[str, Any]) -> None:
    """Zero every masked-out weight in place (keeps the pruning pattern)."""
    import torch

    if not masks:
        return
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            p = params[name]
            p.mul_(keep.to(device=p.device, dtype=p.dtype))


def write_jsonl(records: Iterable[dict[str, Any]], path: Path) -> int:
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False, sort_keys=True) + "\n")
            n += 1
    return n


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    """Records of a JSONL file; a bad line raises :class:`CorruptDataError`
    naming the file and its 1-based line number."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
                if not line.strip():
                    continue
                rec = json.loads(line)
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise CorruptDataError(
                    f"{path}:{number}: corrupt JSONL line ({e}); restore the file "
                    "(`dvc checkout`) or re-run the stage that wrote it"
                ) from None
            if not isinstance(rec, dict):
                raise CorruptDataError(
                    f"{path}:{number}: a JSONL record must be an object, got "
                    f"{type(rec).__name__}"
                )
            yield rec


def write_dataset(
    records: list[dict[str, Any]], out_dir: Path, source: str, **meta: Any
) -> dict[str, Any]:
    """Write ``data.jsonl`` + ``dataset.json`` (hash, source, count, meta)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    n = write_jsonl(records, out_dir / DATA_FILE)
    digest = hashlib.sha256((out_dir / DATA_FILE).read_bytes()).hexdigest()
    info = {"source": source, "count": n, "sha256": digest, **meta}
    (out_dir / DATASET_META).write_text(json.dumps(info, indent=2, sort_keys=True))
    return info


def read_dataset(folder: Path) -> list[dict[str, Any]]:
    """Records of a dataset artifact folder (a world's pool, a selection, ...)."""
    f = Path(folder) / DATA_FILE
    if not f.exists():
        raise FileNotFoundError(
            f"{folder}: no {DATA_FILE}; is this a dataset artifact?"
        )
    return list(read_jsonl(f))
