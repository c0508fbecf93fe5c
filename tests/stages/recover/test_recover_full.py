"""recover/full: masks kept bit for bit, every kept weight trains, loss falls,
and a killed run resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.contract import RunContext

ROOT = Path(__file__).resolve().parents[3]


def _run(params, tiny, out: Path, ckpt: Path | None = None, log=None):
    from stages.recover import run

    out.mkdir(parents=True, exist_ok=True)
    inputs = {"model": tiny["sparse"], "data": tiny["data"]}
    return run(params, inputs, out, RunContext(checkpoint_dir=ckpt, log_fn=log))


def _weights(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_full_keeps_mask_and_trains_every_kept_weight(tiny, tmp_path):
    from stages.common.io import load_masks
    from stages.recover.full import Params

    logged = []
    params = Params(model="sparse", data="data", steps=6, micro_batch=8, lr=1e-3)
    res = _run(params, tiny, tmp_path / "out", log=lambda m, s: logged.append((s, m)))
    before, after = _weights(tiny["sparse"]), _weights(tmp_path / "out")
    masks = load_masks(tiny["sparse"])
    assert masks and load_masks(tmp_path / "out").keys() == masks.keys()
    for name, keep in masks.items():
        # the zero pattern is the input's, bit for bit
        assert ((after[name] == 0) == (before[name] == 0)).all(), name
        assert ((after[name] == 0) == ~keep).all(), name
        # the kept weights train (TRL's "every trainable parameter changed"); an
        # entry may come back to its exact float after 6 Adam steps, so allow
        # one in a thousand
        moved = (after[name][keep] != before[name][keep]).float().mean()
        assert moved > 0.999, (name, float(moved))
    for name in before:
        assert not (after[name] == before[name]).all(), f"{name} did not train"
    # per-step logging: loss, lr, tokens/s and grad norm at every step
    assert [s for s, _ in logged] == list(range(1, 7))
    assert {"loss", "lr", "tokens_per_s", "grad_norm"} <= set(logged[0][1])
    assert res.metrics["steps"] == 6 and res.metrics["masked_sparsity"] == 0.5
    assert res.plots == ["loss.csv", "loss.png"]
    assert (tmp_path / "out" / "loss.png").stat().st_size > 0


def test_full_loss_falls_and_model_loads(tiny, tmp_path):
    from stages.common.io import load_model
    from stages.recover.full import Params

    params = Params(
        model="sparse", data="data", epochs=4, micro_batch=8, lr=2e-3, warmup=0.1
    )
    res = _run(params, tiny, tmp_path / "out")
    assert res.metrics["steps"] == 48  # ceil(4 * 96 / 8)
    assert res.metrics["final_loss_avg10pct"] < 0.8 * res.metrics["first_loss"]
    model = load_model(tmp_path / "out")
    assert model.config.num_hidden_layers == 2


def test_mask_none_trains_dense(tiny, tmp_path):
    from stages.common.io import load_masks
    from stages.recover.full import Params

    params = Params(model="sparse", data="data", steps=2, mask="none")
    _run(params, tiny, tmp_path / "out")
    after = _weights(tmp_path / "out")
    name = next(iter(load_masks(tiny["sparse"])))
    assert (after[name] != 0).float().mean() > 0.9
    assert not (tmp_path / "out" / "masks.safetensors").exists()


KILLER = """
import os, signal, sys
from pathlib import Path
import torch
torch.set_num_threads(1)
from pipelines.contract import RunContext
from stages.recover import run
from stages.recover.full import Params
tiny = {k: Path(v) for k, v in zip(("sparse", "data"), sys.argv[1:3])}
out, ckpt, kill_at = Path(sys.argv[3]), Path(sys.argv[4]), int(sys.argv[5])
def log(m, step):
    if step == kill_at:
        os.kill(os.getpid(), signal.SIGKILL)
params = Params.model_validate_json(sys.argv[6])
out.mkdir(parents=True)
run(params, {"model": tiny["sparse"], "data": tiny["data"]}, out,
    RunContext(checkpoint_dir=ckpt, log_fn=log))
"""


def test_killed_run_resumes_to_the_same_weights(tiny, tmp_path):
    import torch

    from stages.recover.full import Params

    params = Params(
        model="sparse",
        data="data",
        steps=10,
        micro_batch=4,
        grad_accum=2,
        lr=1e-3,
        checkpoint_every=3,
        seed=3,
    )
    ref = _run(params, tiny, tmp_path / "ref", tmp_path / "ckpt-ref")

    ckpt = tmp_path / "ckpt"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            KILLER,
            str(tiny["sparse"]),
            str(tiny["data"]),
            str(tmp_path / "killed"),
            str(ckpt),
            "8",
            params.model_dump_json(),
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == -9, proc.stderr[-2000:]
    saved = sorted(p.name for p in ckpt.glob("step-*"))
    assert saved == ["step-0000003", "step-0000006"]  # keep_checkpoints=2
    assert json.loads((ckpt / saved[-1] / "state.json").read_text())["step"] == 6

    resumed = []
    res = _run(
        params, tiny, tmp_path / "resumed", ckpt, log=lambda m, s: resumed.append(s)
    )
    assert resumed == [7, 8, 9, 10]  # picked up after the last checkpoint
    assert res.metrics["final_loss"] == ref.metrics["final_loss"]
    a, b = _weights(tmp_path / "ref"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    curve = (tmp_path / "resumed" / "loss.csv").read_text().splitlines()
    assert len(curve) == 11  # header + all 10 steps, including the killed run's


def test_foreign_checkpoints_are_not_resumed(tiny, tmp_path):
    from stages.recover.full import Params

    ckpt = tmp_path / "ckpt"
    _run(
        Params(model="sparse", data="data", steps=4, checkpoint_every=2),
        tiny,
        tmp_path / "a",
        ckpt,
    )
    steps = []
    _run(
        Params(model="sparse", data="data", steps=4, checkpoint_every=2, lr=1e-3),
        tiny,
        tmp_path / "b",
        ckpt,
        log=lambda m, s: steps.append(s),
    )
    assert steps == [1, 2, 3, 4]  # other lr: fingerprint differs, starts over


def test_validation_names_the_field():
    from pydantic import ValidationError

    from stages.recover.full import Params

    with pytest.raises(ValidationError, match="launcher: deepspeed"):
        Params(model="m", data="d", precision="fp16")
    with pytest.raises(ValidationError, match="teacher\n  Extra inputs"):
        Params(model="m", data="d", teacher="base")  # only distill reads a teacher
    with pytest.raises(ValidationError, match="deepspeed.offload_params"):
        Params(
            model="m",
            data="d",
            launcher="deepspeed",
            deepspeed={"zero_stage": 2, "offload_params": True},
        )


def test_dense_input_trains_dense_and_writes_no_mask(tiny, tmp_path):
    """Structured (width/depth) pruning outputs carry no mask: they train as the
    dense models they are."""
    from stages.recover import run
    from stages.recover.full import Params

    out = tmp_path / "out"
    out.mkdir()
    run(
        Params(model="dense", data="data", steps=2),
        {"model": tiny["dense"], "data": tiny["data"]},
        out,
        RunContext(),
    )
    assert not (out / "masks.safetensors").exists()
    before, after = _weights(tiny["dense"]), _weights(out)
    assert all(not (after[k] == before[k]).all() for k in before)
