"""mergekit in its own virtual environment (``.venv-mergekit``, git-ignored):
its pins (pydantic, accelerate) differ from carp's, so it never shares .venv.
Used by the slow equality test and by benchmarks/merge_cost.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[3]
VENV = REPO / ".venv-mergekit"
MERGEKIT = "mergekit==0.1.5"
TORCH = "torch==2.13.0"  # the project's pin (the CPU build)


def ensure_venv() -> Path:
    """Create ``.venv-mergekit`` with mergekit and torch 2.13.0 when missing;
    returns the path of ``mergekit-yaml``."""
    exe = VENV / "bin" / "mergekit-yaml"
    if not exe.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        pip = [str(VENV / "bin" / "python"), "-m", "pip", "install", "-q"]
        subprocess.run([*pip, MERGEKIT, TORCH], check=True)
    return exe


def mergekit_config(
    method: str,
    models: list[Path],
    base: Path | None,
    params: dict[str, Any],
    per_model: dict[str, list[float]],
) -> dict[str, Any]:
    """A mergekit YAML config (as a dict; JSON is valid YAML)."""
    entries = []
    for i, m in enumerate(models):
        p = {k: v[i] for k, v in per_model.items()}
        entries.append({"model": str(m), **({"parameters": p} if p else {})})
    if base is not None and method != "slerp":
        entries.append({"model": str(base)})
    cfg: dict[str, Any] = {
        "merge_method": method,
        "models": entries,
        "dtype": "float32",
        "parameters": params,
    }
    if base is not None:
        cfg["base_model"] = str(base)
    return cfg


def run_mergekit(cfg: dict[str, Any], out: Path, seed: int | None = None) -> Path:
    """Run ``mergekit-yaml`` on ``cfg`` into ``out`` (CPU)."""
    exe = ensure_venv()
    out.parent.mkdir(parents=True, exist_ok=True)
    path = out.parent / f"{out.name}.yaml"
    path.write_text(json.dumps(cfg, indent=1))
    cmd = [str(exe), str(path), str(out), "--quiet"]
    if seed is not None:
        cmd += ["--random-seed", str(seed)]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    return out
