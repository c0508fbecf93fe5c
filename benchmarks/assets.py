"""The default world, base model and 50%-magnitude-pruned model that the select
benchmarks read: the ``world``, ``base`` and ``prune`` stages of params.yaml,
built once through the stages' own ``run()`` into benchmarks/results/assets/
(git-ignored) and reused by every later run.

Building them takes about as long as ``make demo``'s first three stages (the
base model's pretraining dominates: a few minutes on a 2-core CPU). Scripts
import this as ``benchmarks.assets`` with the repo root on ``sys.path``.
"""

from __future__ import annotations

import importlib
import json
import shutil
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "benchmarks" / "results" / "assets"


def build_stage(
    module: str, params: Any, inputs: dict[str, Path], out: Path, seed: int = 0
) -> Path:
    """Run a stage kind's ``run()`` into ``out`` unless a finished output is
    there; writes ``metrics.json`` and ``params.resolved.yaml`` as the engine
    does, and renames a temp folder into place so a crash leaves no half."""
    import yaml

    from pipelines.contract import RunContext

    if (out / "metrics.json").exists():
        return out
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    print(f"building {out} ...", flush=True)
    t0 = time.perf_counter()
    res = importlib.import_module(module).run(
        params, inputs, tmp, RunContext(seed=seed, name=out.name)
    )
    metrics = {**res.metrics, "stage_seconds": time.perf_counter() - t0}
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=1))
    resolved = {"params": params.model_dump(mode="json"), "seed": seed}
    (tmp / "params.resolved.yaml").write_text(yaml.safe_dump(resolved))
    tmp.rename(out)
    return out


def default_assets(root: Path = ASSETS) -> dict[str, Path]:
    """``world``, ``base`` and ``prune`` folders under ``root``, each built with
    the default pipeline's params (seed 0) when missing."""
    from stages import prune, world
    from stages.world import pretrain

    w = build_stage(
        "stages.world", world.METHODS.load("synthetic").Params(), {}, root / "world"
    )
    b = build_stage(
        "stages.world.pretrain",
        pretrain.METHODS.load("llama").Params(data="world"),
        {"data": w},
        root / "base",
    )
    p = build_stage(
        "stages.prune",
        prune.METHODS.load("magnitude").Params(model="base", sparsity=0.5),
        {"model": b},
        root / "prune",
    )
    return {"world": w, "base": b, "prune": p}
