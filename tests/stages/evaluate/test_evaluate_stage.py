"""Evaluate stage end to end: metrics names, table layout, CSV and chart."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.evaluate import METHODS, run  # noqa: E402
from stages.evaluate.world import Params  # noqa: E402

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
    suites = ["perplexity", "exact_match", "multiple_choice"]
    params = Params(models=["prune", "base"], data="world", suites=suites)
    res = run(params, {"data": world, "models": models}, tmp_path, RunContext())
    fams = FAMILIES
    whole = ["ppl", "word_perplexity", "bits_per_byte", "mc/acc", "mc/acc_norm"]
    seen = ["em_seen", "em_unseen"]  # add, facts: closed; reverse: open
    headline = [*(f"em/{f}" for f in fams), "em/mean", *seen, "ppl_answer", *whole]
    for m in ("prune", "base"):
        keys = {f"{m}/{k}{b}" for k in headline for b in ("", "_lo", "_hi")}
        assert keys == {k for k in res.metrics if k.startswith(f"{m}/")}
        for k in headline:
            lo, v, hi = (res.metrics[f"{m}/{k}{b}"] for b in ("_lo", "", "_hi"))
            assert lo <= v <= hi
    pair = "base-vs-prune"  # later minus earlier model, paired on the records
    binary = [*(f"em/{f}" for f in fams), *seen, "mc/acc", "mc/acc_norm"]
    assert {k for k in res.metrics if k.startswith(pair)} == {
        f"{pair}/{k}{b}" for k in headline for b in ("", "_lo", "_hi")
    } | {f"{pair}/{k}_p" for k in binary}  # McNemar on 0/1 outcomes
    table = (tmp_path / "table.md").read_text()
    assert res.summary == table
    lines = table.splitlines()
    assert lines[0] == "| | prune | base |"  # columns in the given order
    rows = [*fams, "**mean EM**", "EM seen problems", "EM unseen problems"]
    rows += ["**answer perplexity**"]
    rows += ["MC acc", "MC acc_norm", "**perplexity**", "word perplexity"]
    rows += ["bits per byte"]
    assert [ln.split("|")[1].strip() for ln in lines[2 : 2 + len(rows)]] == rows
    assert "base − prune" in table and "[" in lines[2]
    with open(tmp_path / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 * (len(fams) + 1) and rows[0]["model"] == "prune"
    assert float(rows[0]["em_lo"]) <= float(rows[0]["em"]) <= float(rows[0]["em_hi"])
    assert (tmp_path / "em.png").read_bytes()[:4] == b"\x89PNG"
    assert set(res.plots) == {"results.csv", "em.png"}
    assert (tmp_path / "predictions" / "base.jsonl").exists()
    assert (tmp_path / "answers" / "base.jsonl").exists()
    assert (tmp_path / "documents" / "base.jsonl").exists()
    assert (tmp_path / "choices" / "base.jsonl").exists()


def test_registry_lists_the_suites_and_params_validate():
    from stages.evaluate import SUITES

    assert METHODS.names() == ["datasets", "lm_eval", "world"]
    assert set(SUITES.names()) == {
        "perplexity",
        "exact_match",
        "multiple_choice",
        "lm_eval",
        "unlearning",
    }
    assert SUITES.describe("perplexity") and SUITES.describe("exact_match")
    with pytest.raises(ValidationError, match="did you mean 'perplexity'"):
        Params(models=["a"], data="w", suites=["perplexty"])
    with pytest.raises(ValidationError, match="models"):
        Params(models=[], data="w")
