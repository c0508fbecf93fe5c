"""select kind: budget validation, random and full selection."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from pipelines.contract import RunContext
from stages.common.io import read_dataset, write_dataset
from stages.select import Params, run
from stages.select import full as full_m
from stages.select import random as random_m
from stages.select.budget import resolve_budget


def _pool(tmp_path, n=100):
    recs = [
        {
            "id": f"r{i:04d}",
            "family": ["add", "rev", "count"][i % 3],
            "instruction": f"Do task {i % 3}",
            "input": str(i),
            "output": str(i * 2),
            "corrupted": i % 10 == 0,
        }
        for i in range(n)
    ]
    d = tmp_path / "world"
    write_dataset(recs, d, source="test")
    return d, recs


def test_budget_fraction_and_count():
    assert resolve_budget(0.2, 6000) == 1200
    assert resolve_budget(0.29, 100) == 29  # no float truncation to 28
    assert resolve_budget(0.001, 10) == 1
    assert resolve_budget(50, 100) == 50
    assert resolve_budget(None, 7) == 7
    with pytest.raises(ValueError, match="exceeds"):
        resolve_budget(101, 100, "world")


@pytest.mark.parametrize("bad", [0, -3, 0.0, 1.5, 2000.0, float("nan"), True, "x"])
def test_budget_rejected_with_field_name(bad):
    with pytest.raises(ValidationError, match="budget"):
        random_m.Params(pool="world", budget=bad)


def test_budget_types_kept():
    assert isinstance(random_m.Params(pool="w", budget=20).budget, int)
    assert isinstance(random_m.Params(pool="w", budget=0.2).budget, float)
    assert random_m.Params(pool="w", budget=1.0).budget == 1.0
    with pytest.raises(ValidationError, match="budget\n  Field required"):
        random_m.Params(pool="w")
    with pytest.raises(ValidationError, match="whole pool"):
        full_m.Params(pool="w", budget=0.5)
    with pytest.raises(ValidationError, match="whole pool"):
        full_m.Params(pool="w", budget=1)
    with pytest.raises(ValidationError):
        random_m.Params(pool="w", budget=0.2, bogus=1)
    assert Params.input_fields() == {"pool": "dataset"}  # methods add their own


def test_random_is_seeded_and_keeps_records(tmp_path):
    pool_dir, recs = _pool(tmp_path)
    outs = []
    for k, seed in enumerate([0, 0, 1]):
        out = tmp_path / f"sel{k}"
        p = random_m.Params(pool="world", budget=0.2, seed=seed)
        res = run(p, {"pool": pool_dir}, out, RunContext(seed=seed))
        assert res.datasets == ["data.jsonl"]
        got = read_dataset(out)
        assert len(got) == 20
        by_id = {r["id"]: r for r in recs}
        assert all(r == by_id[r["id"]] for r in got)  # every field kept
        assert len({r["id"] for r in got}) == 20
        rep = json.loads((out / "selection.json").read_text())
        assert rep["selected"] == 20 and rep["pool_size"] == 100
        assert rep["corrupted_selected"] == sum(r["corrupted"] for r in got)
        outs.append([r["id"] for r in got])
    assert outs[0] == outs[1]
    assert outs[0] != outs[2]


def test_random_seed_from_context(tmp_path):
    pool_dir, _ = _pool(tmp_path)
    p = random_m.Params(pool="world", budget=10)
    a = run(p, {"pool": pool_dir}, tmp_path / "a", RunContext(seed=3))
    run(p, {"pool": pool_dir}, tmp_path / "b", RunContext(seed=3))
    assert a.metrics["selected"] == 10
    assert read_dataset(tmp_path / "a") == read_dataset(tmp_path / "b")


def test_full_takes_everything(tmp_path):
    pool_dir, recs = _pool(tmp_path, 30)
    out = tmp_path / "full"
    run(full_m.Params(pool="world"), {"pool": pool_dir}, out, RunContext())
    assert read_dataset(out) == recs
