"""The dataset kind's world method: a world's record file as a dataset, a seeded
subset or part of its people, and a pool without the forget/holdout people."""

import pytest

from pipelines.contract import RunContext
from stages.common.io import read_dataset, read_jsonl
from stages.dataset import METHODS, run
from stages.world.people import drop_people, excluded_people


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.tiny import micro_world

    return micro_world(
        tmp_path_factory.mktemp("ds") / "w", forget_fraction=0.5, holdout_fraction=0.3
    )


def expose(world, out, **kw):
    params = METHODS.load("world").Params(world="world", **kw)
    res = run(params, {"world": world}, out, RunContext(seed=0))
    return read_dataset(out), res.metrics


def test_parts_are_disjoint_and_cover_the_people(world, tmp_path):
    everyone = {r["subject"] for r in read_jsonl(world / "forget.jsonl")}
    assert len(everyone) >= 2
    parts = [
        {
            r["subject"]
            for r in expose(world, tmp_path / f"p{i}", split="forget", parts=2, part=i)[
                0
            ]
        }
        for i in range(2)
    ]
    assert set().union(*parts) == everyone
    assert all(not a & b for i, a in enumerate(parts) for b in parts[i + 1 :])
    half, m = expose(world, tmp_path / "half", split="forget", people=0.5)
    assert m["people"] == round(0.5 * len(everyone))


def test_pool_exclude_drops_the_forget_and_holdout_people(world, tmp_path):
    pool = list(read_jsonl(world / "data.jsonl"))
    named = excluded_people(world, ("forget", "holdout"))
    kept, m = expose(
        world, tmp_path / "clean", split="pool", exclude=["forget", "holdout"]
    )
    assert kept == drop_people(pool, named)  # same records, same order, ids kept
    assert 0 < m["excluded_records"] == len(pool) - len(kept)
    prompts = " ".join(f"{r['instruction']} {r['input']}" for r in kept)
    assert not any(p in prompts for p in named)
    plain, _ = expose(world, tmp_path / "plain", split="pool")
    assert plain == pool  # no exclusion: the pool unchanged


def test_excluding_the_split_itself_is_refused():
    with pytest.raises(ValueError, match="exclude: forget"):
        METHODS.load("world").Params(world="w", split="forget", exclude=["forget"])
