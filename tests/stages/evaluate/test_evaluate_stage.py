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

FAMILIES = ["add", "facts", "reverse"]


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    import torch

    from tests.tiny import micro_world, tiny_llama, world_tokenizer, write_checkpoint

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("stage")
    world = micro_world(
        root / "world", eval_per_family=3, ppl_size=9, families=FAMILIES
    )
    tok = world_tokenizer(world)
    models = []
    for i, name in enumerate(["prune", "base"]):  # "prune" without a tokenizer
        model = tiny_llama(
            tok, seed=i, hidden=32, layers=1, heads=2, kv_heads=1, max_positions=2048
        )
        models.append(write_checkpoint(model, tok if i else None, root / name))
    return world, models


def test_stage_writes_table_csv_chart_and_flat_metrics(folders, tmp_path):
    world, models = folders
    params = Params(method="exact_match", models=["prune", "base"], data="world")
    res = run(params, {"data": world, "models": models}, tmp_path, RunContext())
    fams = FAMILIES
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
