"""The training loop: deterministic global batches, gradient accumulation,
keep-masks, per-step logging and resumable checkpoints.

The loop knows nothing about what is being trained: a task brings the model,
a loss function and tokenized examples; a backend (plain PyTorch here,
DeepSpeed in :mod:`stages.common.train.ds_backend`) does backward and step.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from stages.common.train.schedule import global_batch, rank_micro_batches, total_steps

STATE_FILE = "state.json"  # written last: a checkpoint without it is incomplete


@dataclass(frozen=True)
class StepInfo:
    """Where training is, for losses with schedules (TAID, unlearning ramps)."""

    step: int  # 0-based optimizer step
    total: int

    @property
    def progress(self) -> float:
        return self.step / max(1, self.total - 1)


# loss_fn(model, batch, info) -> (scalar loss, {name: detached scalar} to log)
LossFn = Callable[[Any, dict[str, Any], StepInfo], tuple[Any, dict[str, Any]]]


@dataclass
class TrainTask:
    """Everything a run trains: built by a stage's builder on every rank."""

    model: Any
    loss_fn: LossFn
    examples: list[Any]  # (ids, labels) pairs for the default collate
    pad_id: int
    fingerprint: str  # checkpoints made under another fingerprint are discarded
    masks: dict[str, Any] = field(default_factory=dict)  # trainable name -> keep
    finalize: Callable[[Any, Path], dict[str, Any]] | None = None
    fresh_model: Callable[[], Any] | None = None  # for gathering sharded weights
    # examples -> batch of tensors; the default pads (ids, labels) pairs. A
    # custom one (e.g. forget + retain pairs for unlearning) must still return
    # "attention_mask", which the tokens/s count reads.
    collate: Callable[[list[Any], int], dict[str, Any]] | None = None


class Backend(Protocol):
    rank: int
    world_size: int
    device: Any

    def autocast(self) -> Any: ...
    def backward(self, loss: Any) -> None: ...
    def step(self) -> float: ...
    def lr(self) -> float: ...
    def reduce(self, values: Any) -> Any: ...
    def barrier(self) -> None: ...
    def save_checkpoint(self, root: Path, tag: str) -> None: ...
    def load_checkpoint(self, root: Path, tag: str) -> None: ...


def _tag(step: int) -> str:
    return f"step-{step:07d}"


def find_resume(root: Path, fingerprint: str) -> tuple[str, dict[str, Any]] | None:
    """Latest complete checkpoint under ``root`` made with ``fingerprint``."""
    best = None
    for d in sorted(root.glob("step-*")):
        f = d / STATE_FILE
        if d.is_dir() and f.exists():
            state = json.loads(f.read_text())
            if state.get("fingerprint") == fingerprint:
                best = (d.name, state)
    return best


def clean_checkpoints(root: Path, fingerprint: str, keep: int) -> None:
    """Drop incomplete, foreign (other fingerprint) and surplus checkpoints."""
    good = []
    for d in sorted(root.glob("step-*")):
        f = d / STATE_FILE
        ok = f.exists() and json.loads(f.read_text()).get("fingerprint") == fingerprint
        if ok:
            good.append(d)
        else:
            shutil.rmtree(d, ignore_errors=True)
    for d in good[: max(0, len(good) - keep)]:
        shutil.rmtree(d, ignore_errors=True)


def train(
    task: TrainTask,
    cfg: Any,
    backend: Backend,
    seed: int,
    on_step: Callable[[dict[str, float]], None] | None = None,
    checkpoint_dir: Path | None = None,
) -> dict[str, Any]:
    """Run ``cfg`` (a TrainParams) to the end; return metrics and the history.

    Every rank calls this; the returned history is the same on all of them.
    """
    import torch

    from stages.common.text import collate

    n = len(task.examples)
    m, g, world = cfg.micro_batch, cfg.grad_accum, backend.world_size
    size = m * g * world
    total = total_steps(n, size, cfg.epochs, cfg.steps)
    start, history = 0, []
    if checkpoint_dir is not None:
        checkpoint_dir.mkdir(parents=True, exist_ok=True)
        found = find_resume(checkpoint_dir, task.fingerprint)
        backend.barrier()
        if backend.rank == 0:
            clean_checkpoints(checkpoint_dir, task.fingerprint, cfg.keep_checkpoints)
        backend.barrier()
        if found is not None:
            backend.load_checkpoint(checkpoint_dir, found[0])
            start, history = found[1]["step"], found[1]["history"]
    model = task.model
    model.train()
    collate_fn = task.collate or collate
    for step in range(start, total):
        info = StepInfo(step, total)
        t0 = time.perf_counter()
        lr = backend.lr()
        loss_sum = torch.zeros((), device=backend.device)
        tokens = torch.zeros((), device=backend.device)
        parts: dict[str, Any] = {}
        for mb in rank_micro_batches(
            global_batch(n, step, size, seed), m, g, backend.rank
        ):
            batch = collate_fn([task.examples[i] for i in mb], task.pad_id)
            batch = {k: v.to(backend.device) for k, v in batch.items()}
            with backend.autocast():
                loss, logs = task.loss_fn(model, batch, info)
            backend.backward(loss)
            loss_sum += loss.detach().float()
            tokens += batch["attention_mask"].sum()
            for k, v in logs.items():
                parts[k] = parts.get(k, 0.0) + v.detach().float()
        grad_norm = backend.step()
        names = sorted(parts)
        packed = torch.stack(
            [loss_sum / g, tokens.float()] + [parts[k] / g for k in names]
        )
        packed = backend.reduce(packed).tolist()  # summed over ranks
        dt = time.perf_counter() - t0
        rec = {
            "step": step + 1,
            "loss": packed[0] / world,
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens": packed[1],
            "tokens_per_s": packed[1] / dt,
            "seconds": dt,
        }
        rec.update({k: v / world for k, v in zip(names, packed[2:], strict=True)})
        _check_finite(rec, cfg)
        history.append(rec)
        if on_step is not None:
            on_step(rec)
        done = step + 1
        every = cfg.checkpoint_every
        if checkpoint_dir is not None and every and done % every == 0 and done < total:
            _save(
                backend,
                checkpoint_dir,
                done,
                task.fingerprint,
                history,
                cfg.keep_checkpoints,
            )
    if total and not _params_finite(model):
        raise NonFiniteError(
            f"training left non-finite weights after {total} step(s) (lr {cfg.lr}); "
            "lower `lr` or set `max_grad_norm`; nothing is published"
        )
    return summarize(history, total)


class NonFiniteError(FloatingPointError):
    """Training diverged (NaN/inf loss, gradient or weights): the stage stops
    and publishes nothing."""


def _check_finite(rec: dict[str, Any], cfg: Any) -> None:
    """Stop at the first step whose loss or gradient norm is not finite."""
    grad = rec.get("grad_norm")
    bad_grad = grad is not None and not math.isfinite(float(grad))
    if math.isfinite(rec["loss"]) and not bad_grad:
        return
    what = f"loss {rec['loss']}" + (f", gradient norm {grad}" if bad_grad else "")
    raise NonFiniteError(
        f"training diverged at step {rec['step']}: {what} (lr {cfg.lr}); lower "
        "`lr`, set `max_grad_norm`, or check the data; nothing is published"
    )


def _params_finite(model: Any) -> bool:
    import torch

    with torch.no_grad():
        return all(bool(torch.isfinite(p).all()) for p in model.parameters())


def _save(
    backend: Backend,
    root: Path,
    step: int,
    fingerprint: str,
    history: list[dict[str, float]],
    keep: int,
) -> None:
    tag = _tag(step)
    backend.save_checkpoint(root, tag)
    backend.barrier()
    if backend.rank == 0:
        state = {"step": step, "fingerprint": fingerprint, "history": history}
        tmp = root / tag / (STATE_FILE + ".tmp")
        tmp.write_text(json.dumps(state))
        tmp.replace(root / tag / STATE_FILE)
        clean_checkpoints(root, fingerprint, keep)
    backend.barrier()


def summarize(history: list[dict[str, float]], total: int) -> dict[str, Any]:
    """Final metrics of a run from its per-step records."""
    tokens = sum(r["tokens"] for r in history)
    secs = sum(r["seconds"] for r in history)
    tail = history[-max(1, len(history) // 10) :] if history else []
    return {
        "steps": total,
        "final_loss": history[-1]["loss"] if history else float("nan"),
        "final_loss_avg10pct": sum(r["loss"] for r in tail) / max(1, len(tail)),
        "first_loss": history[0]["loss"] if history else float("nan"),
        # names differ from the per-step series so MLflow keeps them apart
        "train_tokens": tokens,
        "train_seconds": secs,
        "train_tokens_per_s": tokens / secs if secs > 0 else 0.0,
        "history": history,
    }
