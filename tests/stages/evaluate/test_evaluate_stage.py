"""Evaluate stage end to end: metrics names, table layout, CSV and chart."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.evaluate import METHODS, Params, run  # noqa: E402

MICRO_WORLD = dict(
    pool_size=90,
    eval_per_family=3,
    pretrain_size=450,
    ppl_size=9,
    facts=6,
    vocab_size=400,
    families=["add", "facts", "reverse"],
)


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages.common.io import load_tokenizer, save_model
    from stages.world import METHODS as WORLD
    from stages.world import run as build_world

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stage")
    world = root / "world"
    world.mkdir()
    build_world(WORLD.load("synthetic").Params(**MICRO_WORLD), {}, world, RunContext())
    tok = load_tokenizer(world / "tokenizer")
    models = []
    for i, name in enumerate(["prune", "base"]):
        torch.manual_seed(i)
        cfg = LlamaConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=1,
            num_attention_heads=2,
            num_key_value_heads=1,
            intermediate_size=64,
            bos_token_id=tok.bos_token_id,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        save_model(LlamaForCausalLM(cfg), tok if i else None, root / name)
        models.append(root / name)
    return world, models


def test_stage_writes_table_csv_chart_and_flat_metrics(folders, tmp_path):
    world, models = folders
    params = Params(method="exact_match", models=["prune", "base"], data="world")
    res = run(params, {"data": world, "models": models}, tmp_path, RunContext())
    fams = ["add", "facts", "reverse"]
    for m in ("prune", "base"):
        assert {f"{m}/em/{f}" for f in fams} | {f"{m}/em/mean", f"{m}/ppl"} == {
            k for k in res.metrics if k.startswith(f"{m}/")
        }
    table = (tmp_path / "table.md").read_text()
    assert res.summary == table
    lines = table.splitlines()
    assert lines[0] == "| | prune | base |"  # columns in the given order
    assert [ln.split("|")[1].strip() for ln in lines[2:]] == [
        *fams,
        "**mean EM**",
        "**perplexity**",
    ]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (len(fams) + 1) and rows[0]["model"] == "prune"
    assert (tmp_path / "em.png").read_bytes()[:4] == b"\x89PNG"
    assert set(res.plots) == {"results.csv", "em.png"}
    assert (tmp_path / "predictions" / "base.jsonl").exists()


def test_registry_lists_both_suites_and_params_validate():
    assert METHODS.names() == ["exact_match", "perplexity"]
    assert METHODS.describe("perplexity") and METHODS.describe("exact_match")
    with pytest.raises(ValidationError, match="did you mean 'perplexity'"):
        Params(method="exact_match", models=["a"], data="w", suites=["perplexty"])
    with pytest.raises(ValidationError, match="models"):
        Params(method="exact_match", models=[], data="w")
