"""Local HF checkpoint folder (safetensors only), linked or copied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Literal

from pipelines.contract import StageResult
from stages.common.io import CorruptDataError
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
    for f in sorted(src.glob("*.safetensors")):
        check_safetensors(f)
    cfg = json.loads((src / "config.json").read_text())
    if cfg.get("auto_map") and not params.trust_remote_code:
        raise ValueError(
            f"path: {src} ships its own modelling code (config.json auto_map); "
            "carp does not run it unless this stage declares "
            "`trust_remote_code: true` (recorded in its manifest and MLflow run)"
        )
    from stages.common.arch import config_problem

    why = config_problem(src, params.trust_remote_code)
    if why:
        raise ValueError(f"path: {src}: {why}")
    # the checkpoint's own code (*.py) comes along only when it is trusted
    suffixes = WEIGHT_SUFFIXES + ((".py",) if params.trust_remote_code else ())
    n = 0
    for f in sorted(src.iterdir()):
        if f.is_file() and f.suffix in suffixes:
            dest = out_dir / f.name
            if params.link:
                dest.symlink_to(f.resolve())
            else:
                shutil.copy2(f, dest)
            n += 1
    return StageResult(
        metrics={"files": n},
        extra_manifest={
            "source": str(src.resolve()),
            "architectures": cfg.get("architectures", []),
        },
    )


def check_safetensors(path: Path) -> None:
    """The header parses and covers the whole file (a truncated copy fails)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="numpy"):
            pass
    except Exception as e:  # noqa: BLE001 - safetensors raises its own types
        raise CorruptDataError(
            f"{path}: not a complete safetensors file ({e}); copy the checkpoint again"
        ) from None
