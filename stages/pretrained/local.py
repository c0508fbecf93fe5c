"""Local HF checkpoint folder (safetensors only), linked or copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pipelines.contract import StageResult
from stages.pretrained import WEIGHT_SUFFIXES
from stages.pretrained import Params as _Base


class Params(_Base):
    method: Literal["local"] = "local"


def bring(params: _Base, out_dir: Path) -> StageResult:
    src = Path(params.path).expanduser()
    if not (src / "config.json").exists():
        raise FileNotFoundError(
            f"path: {src} has no config.json; point `path` at a local HF checkpoint"
        )
    if list(src.glob("*.bin")) and not list(src.glob("*.safetensors")):
        raise ValueError(
            f"path: {src} holds only pickle (.bin) weights; carp reads safetensors "
            "only — convert it first (e.g. save_pretrained(safe_serialization=True))"
        )
    n = 0
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in WEIGHT_SUFFIXES:
            dest = out_dir / f.name
            if params.link:
                dest.symlink_to(f.resolve())
            else:
                shutil.copy2(f, dest)
            n += 1
    cfg = json.loads((src / "config.json").read_text())
    return StageResult(
        metrics={"files": n},
        extra_manifest={
            "source": str(src.resolve()),
            "architectures": cfg.get("architectures", []),
        },
    )
