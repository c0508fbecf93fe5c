"""Pretrain stage: a micro run learns, is deterministic, and saves a loadable model."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.world import pretrain  # noqa: E402
from stages.world.pretrain.llama import lr_factor  # noqa: E402

# the "micro" setting used by integration tests (seconds on one core)
MICRO = dict(
    hidden_size=32,
    layers=2,
    heads=2,
    kv_heads=1,
    intermediate_size=64,
    steps=40,
    batch_size=16,
    warmup_ratio=0.1,
    lr=1e-2,
    max_len=48,
    log_every=10,
    eval_batch_size=64,
)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import torch

    from tests.tiny import micro_world

    torch.set_num_threads(1)
    return micro_world(tmp_path_factory.mktemp("pre") / "world", pretrain_size=600)


def train(world: Path, out: Path, **kw: object):
    params = pretrain.METHODS.load("llama").Params(data="world", **{**MICRO, **kw})
    out.mkdir()
    logged: list[tuple[int, dict[str, float]]] = []
    ctx = RunContext(seed=params.seed or 0, log_fn=lambda m, s: logged.append((s, m)))
    return pretrain.run(params, {"data": world}, out, ctx), logged


def test_micro_run_learns_and_is_deterministic(world, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    res, logged = train(world, tmp_path / "a")
    assert [s for s, _ in logged] == [10, 20, 30, 40]
    assert res.metrics["train/loss_final"] < 0.8 * res.metrics["train/loss_first"]
    fams = {k for k in res.metrics if k.startswith("em/")}
    assert fams == {f"em/{f.stem}" for f in (world / "eval").glob("*.jsonl")} | {
        "em/mean"
    }
    assert math.isfinite(res.metrics["ppl"]) and res.metrics["ppl"] < 400
    model = AutoModelForCausalLM.from_pretrained(str(tmp_path / "a"))
    assert model.config.hidden_size == 32
    assert AutoTokenizer.from_pretrained(str(tmp_path / "a")).eos_token == "<|eos|>"
    train(world, tmp_path / "b")
    a = (tmp_path / "a" / "model.safetensors").read_bytes()
    assert a == (tmp_path / "b" / "model.safetensors").read_bytes()
    train(world, tmp_path / "c", seed=1)
    assert a != (tmp_path / "c" / "model.safetensors").read_bytes()


def test_response_only_loss_trains_too(world, tmp_path):
    res, _ = train(world, tmp_path / "r", loss_on="response", steps=20, log_every=5)
    assert res.metrics["train/loss_final"] < res.metrics["train/loss_first"]


def test_cosine_schedule_warms_up_peaks_and_decays_to_floor():
    f = [lr_factor(s, 100, 10, 0.1) for s in range(101)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0)
    assert f[10] == pytest.approx(1.0) and f[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(f[10:], f[11:], strict=False))


def test_shape_errors_name_the_field():
    cls = pretrain.METHODS.load("llama").Params
    with pytest.raises(ValidationError, match="heads: hidden_size 30"):
        cls(data="w", hidden_size=30, heads=4)
    with pytest.raises(ValidationError, match="kv_heads"):
        cls(data="w", heads=4, kv_heads=3)
