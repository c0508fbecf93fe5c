"""Run a training job in-process or under the DeepSpeed launcher.

A job is a JSON-able dict (builder, kind, method, params, input paths, output
and checkpoint folders, seed). The builder ``module:function`` turns it into a
:class:`TrainTask` on each rank, so the in-process path and every DeepSpeed
rank build exactly the same thing.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pipelines.contract import RunContext

METRICS_FILE = "steps.jsonl"
RESULT_FILE = "result.json"


def make_job(
    builder: str,
    kind: str,
    params: Any,
    inputs: dict[str, Any],
    out_dir: Path,
    ctx: RunContext,
    examples_input: str = "data",
) -> dict[str, Any]:
    """The JSON job both launch paths run (paths made absolute), with the
    context's seed, checkpoint folder and the inputs' fingerprints (what a
    checkpoint must have been made from to be resumed).

    ``examples_input``: the input whose ``data.jsonl`` holds one training
    example per record (``data`` for recover, ``forget`` for unlearn); the
    DeepSpeed launcher counts it to size the progress bar."""

    def _abs(v: Any) -> Any:
        if v is None:
            return None
        return (
            [str(Path(p).resolve()) for p in v]
            if isinstance(v, list)
            else str(Path(v).resolve())
        )

    return {
        "builder": builder,
        "kind": kind,
        "method": params.method,
        "params": params.model_dump(mode="json"),
        "inputs": {k: _abs(v) for k, v in inputs.items()},
        "out_dir": str(Path(out_dir).resolve()),
        "checkpoint_dir": _abs(ctx.checkpoint_dir),
        "seed": int(ctx.seed),
        "input_fingerprints": dict(ctx.input_fingerprints),
        "examples_input": examples_input,
    }


def job_params(job: dict[str, Any]) -> Any:
    """Re-validate a job's params with its method's Params class."""
    from pipelines.kinds import load_kind

    return (
        load_kind(job["kind"]).params_class(job["method"]).model_validate(job["params"])
    )


def load_builder(spec: str) -> Callable[[dict[str, Any], str], Any]:
    mod, _, fn = spec.partition(":")
    return getattr(importlib.import_module(mod), fn)


class StepSink:
    """Forwards step records to MLflow (via ctx) and advances a progress bar."""

    def __init__(self, ctx: RunContext, total: int, desc: str) -> None:
        self.ctx = ctx
        self.bar = ctx.progress(range(total), desc=desc, total=total)
        self.seen = 0

    def __call__(self, rec: dict[str, float]) -> None:
        step = int(rec["step"])
        self.ctx.log_metrics({k: v for k, v in rec.items() if k != "step"}, step)
        while self.seen < step:
            next(self.bar, None)
            self.seen += 1

    def close(self) -> None:
        for _ in self.bar:  # drain so tqdm closes cleanly
            pass


def run_inprocess(job: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Build the task here and train it with the plain PyTorch backend."""
    from stages.common.device import require_device
    from stages.common.train.loop import train
    from stages.common.train.schedule import total_steps
    from stages.common.train.torch_backend import TorchBackend

    cfg = job_params(job)
    device = require_device(cfg.device, job["kind"])
    task = load_builder(job["builder"])(job, device)
    total = total_steps(
        len(task.examples), cfg.micro_batch * cfg.grad_accum, cfg.epochs, cfg.steps
    )
    backend = TorchBackend(task.model, cfg, total, task.masks, device)
    sink = StepSink(ctx, total, "train")
    ckpt = Path(job["checkpoint_dir"]) if job["checkpoint_dir"] else None
    result = train(task, cfg, backend, job["seed"], on_step=sink, checkpoint_dir=ckpt)
    sink.close()
    model = backend.model.to("cpu")
    if task.finalize is not None:
        result.update(task.finalize(model, Path(job["out_dir"])))
    return result


def execute(job: dict[str, Any], ctx: RunContext) -> dict[str, Any]:
    """Run ``job`` with the launcher its params declare; return its result."""
    cfg = job_params(job)
    if cfg.launcher == "none":
        return run_inprocess(job, ctx)
    from stages.common.train.deepspeed_launch import run_deepspeed

    return run_deepspeed(job, cfg, ctx)


def write_curve(
    history: list[dict[str, float]], out_dir: Path, stem: str = "loss"
) -> list[str]:
    """Loss curve as CSV (for `dvc plots`) and PNG (for MLflow); relative paths."""
    import csv

    cols = ["step", "loss", "lr", "grad_norm", "tokens_per_s", "tokens", "seconds"]
    extra = sorted({k for r in history for k in r} - set(cols))
    with open(out_dir / f"{stem}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols + extra)
        for r in history:
            w.writerow([r.get(c, "") for c in cols + extra])
    os.environ.setdefault("MPLBACKEND", "Agg")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], label="loss")
    for k in extra:
        if k.endswith("loss"):
            ax.plot(
                [r["step"] for r in history],
                [r.get(k) for r in history],
                label=k,
                alpha=0.7,
            )
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_dir / f"{stem}.png", dpi=100)
    plt.close(fig)
    return [f"{stem}.csv", f"{stem}.png"]


def read_json(path: Path) -> dict[str, Any]:
    return json.loads(Path(path).read_text())


def run_training(
    builder: str,
    kind: str,
    params: Any,
    inputs: dict[str, Any],
    out_dir: Path,
    ctx: RunContext,
    examples_input: str = "data",
) -> tuple[dict[str, float], list[dict[str, Any]], list[str], list[str]]:
    """What every training kind's ``run`` does: launch the job, write the loss
    curve; return (numeric metrics, step history, plots, run reports)."""
    from stages.common.train.deepspeed_launch import LOG_FILE

    job = make_job(builder, kind, params, inputs, out_dir, ctx, examples_input)
    result = execute(job, ctx)
    history = result.pop("history")
    plots = write_curve(history, out_dir)
    metrics = {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, int | float) and not isinstance(v, bool)
    }
    reports = [LOG_FILE] if (Path(out_dir) / LOG_FILE).exists() else []
    return metrics, history, plots, reports
