"""Per-model evaluation results cached in a stage's checkpoint folder: the
metrics (``<model>.<key>.json``) and the per-item files the suites wrote
beside them (``<model>.<key>.<folder>.<model>.jsonl``), so an interrupted or
repeated evaluation reads a model's results instead of scoring it again."""

from __future__ import annotations

import json
import shutil
from pathlib import Path


def _saved(cache: Path, rel: str) -> Path:
    return cache.with_name(f"{cache.stem}.{rel.replace('/', '.')}")


def load_cached(
    cache: Path | None, files: list[str], out_dir: Path | None
) -> dict[str, float] | None:
    """The cached metrics, with the per-item ``files`` put back into
    ``out_dir``; None when nothing is cached."""
    if cache is None or not cache.exists():
        return None
    for rel in files:
        if out_dir is not None and _saved(cache, rel).exists():
            (out_dir / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(_saved(cache, rel), out_dir / rel)
    return json.loads(cache.read_text())


def save_cached(
    cache: Path | None, files: list[str], out_dir: Path | None, res: dict
) -> None:
    """Keep the per-item files, then the metrics (written last, atomically:
    their presence means the whole result is there)."""
    if cache is None:
        return
    cache.parent.mkdir(parents=True, exist_ok=True)
    for rel in files:
        if out_dir is not None and (out_dir / rel).exists():
            shutil.copy2(out_dir / rel, _saved(cache, rel))
    tmp = cache.with_suffix(".tmp")
    tmp.write_text(json.dumps(res))
    tmp.replace(cache)
