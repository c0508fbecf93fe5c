"""select ``families``: a capability subset of the pool (experts' data)."""

from __future__ import annotations

import pytest

from pipelines.contract import RunContext
from stages.common.io import read_dataset, write_dataset
from stages.select import full as full_m
from stages.select import random as random_m
from stages.select import run


def _pool(tmp_path):
    recs = [
        {
            "id": f"r{i:03d}",
            "family": ["add", "rev", "count"][i % 3],
            "instruction": "x",
            "input": str(i),
            "output": str(i),
        }
        for i in range(90)
    ]
    write_dataset(recs, tmp_path / "world", source="test")
    return tmp_path / "world"


def test_families_restrict_the_pool(tmp_path):
    pool = _pool(tmp_path)
    params = random_m.Params(pool="world", budget=0.5, families=["add", "rev"])
    run(params, {"pool": pool}, tmp_path / "o", RunContext(seed=0))
    recs = read_dataset(tmp_path / "o")
    assert len(recs) == 30  # half of the 60 add/rev records
    assert {r["family"] for r in recs} <= {"add", "rev"}
    everything = full_m.Params(pool="world", families=["count"])
    run(everything, {"pool": pool}, tmp_path / "f", RunContext(seed=0))
    assert len(read_dataset(tmp_path / "f")) == 30


def test_unknown_family_is_named(tmp_path):
    pool = _pool(tmp_path)
    params = random_m.Params(pool="world", budget=0.5, families=["add", "mul"])
    with pytest.raises(ValueError, match="families: mul not in pool 'world'"):
        run(params, {"pool": pool}, tmp_path / "o", RunContext(seed=0))
