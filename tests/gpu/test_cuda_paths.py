"""CUDA paths (marker ``gpu``; run by benchmarks/gpu_check.sh on a GPU
machine): evaluation, pruning and selection on CUDA agree with the same work
on the CPU, and the half-precision paths run and stay close."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.common.io import load_masks, read_dataset, write_dataset  # noqa: E402

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tests.tiny import char_tokenizer, records, tiny_llama, write_checkpoint

    root = tmp_path_factory.mktemp("gpu")
    tok = char_tokenizer()
    model = tiny_llama(
        tok, hidden=128, layers=4, heads=4, kv_heads=2, max_positions=256
    )
    write_checkpoint(model, tok, root / "base")
    recs = records(120)
    write_dataset(recs, root / "data", source="test")
    texts = [
        {"id": f"t{i}", "text": r["instruction"] + " " + r["output"]}
        for i, r in enumerate(recs)
    ]
    write_dataset(texts, root / "text", source="test")
    return {"root": root, "base": root / "base"}


def _eval(world: dict[str, Path], out: Path, **kw: Any) -> dict[str, float]:
    from stages.evaluate import run
    from stages.evaluate.datasets import Params

    p = Params(
        models=["base"],
        text="text",
        instructions="data",
        seqlen=128,
        max_len=128,
        max_new_tokens=4,
        max_samples=40,
        **kw,
    )
    inputs = {
        "models": [str(world["base"])],
        "text": str(world["root"] / "text"),
        "instructions": str(world["root"] / "data"),
    }
    return run(p, inputs, out, RunContext(seed=0)).metrics


def test_evaluation_on_cuda_equals_cpu(world, tmp_path):
    cpu = _eval(world, tmp_path / "cpu", device="cpu", dtype="float32")
    gpu = _eval(world, tmp_path / "gpu", device="cuda", dtype="float32")
    for key in ("ppl_paper", "word_perplexity", "ppl_answer"):
        assert gpu[f"base/{key}"] == pytest.approx(cpu[f"base/{key}"], rel=1e-3), key
    assert gpu["base/rougeL"] == pytest.approx(cpu["base/rougeL"], abs=0.05)


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_evaluation_stays_close(world, tmp_path, dtype):
    full = _eval(world, tmp_path / "fp32", device="cuda", dtype="float32")
    half = _eval(world, tmp_path / dtype, device="cuda", dtype=dtype)
    assert half["base/ppl_paper"] == pytest.approx(full["base/ppl_paper"], rel=0.05)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_pruning_masks_on_cuda_equal_cpu(world, tmp_path, method):
    import importlib

    from stages.prune import run

    cls = importlib.import_module(f"stages.prune.{method}").Params
    masks = {}
    for dev in ("cpu", "cuda"):
        p = cls(model="base", calib="data", nsamples=16, seqlen=64, device=dev)
        out = tmp_path / dev
        out.mkdir()
        inputs = {"model": world["base"], "calib": world["root"] / "data"}
        run(p, inputs, out, RunContext(seed=0))
        masks[dev] = load_masks(out)
    same = sum(int((masks["cpu"][k] == masks["cuda"][k]).sum()) for k in masks["cpu"])
    total = sum(v.numel() for v in masks["cpu"].values())
    assert same / total >= 0.999


def test_paser_on_cuda_selects_what_cpu_selects(world, tmp_path):
    from stages.select import paser, run

    picked = {}
    for dev in ("cpu", "cuda"):
        p = paser.Params(
            pool="data", model="base", reference="base", budget=0.25, device=dev
        )
        inputs = {
            "pool": world["root"] / "data",
            "model": world["base"],
            "reference": world["base"],
        }
        run(p, inputs, tmp_path / dev, RunContext(seed=0))
        picked[dev] = {r["id"] for r in read_dataset(tmp_path / dev)}
    overlap = len(picked["cpu"] & picked["cuda"]) / len(picked["cpu"])
    assert overlap >= 0.9
