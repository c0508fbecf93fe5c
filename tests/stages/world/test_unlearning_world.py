"""The world's holdout people and the pretrain kind's exclusion (the oracle)."""

import json

from stages.common.io import read_jsonl


def test_holdout_is_disjoint_and_forget_unchanged(tmp_path):
    from tests.tiny import micro_world

    plain = micro_world(tmp_path / "plain")
    held = micro_world(tmp_path / "held", holdout_fraction=0.4)
    assert not (plain / "holdout.jsonl").exists()  # default worlds unchanged
    assert "holdout" not in json.loads((plain / "world.json").read_text())["counts"]
    people = {
        name: {r["subject"] for r in read_jsonl(held / f"{name}.jsonl")}
        for name in ("forget", "retain", "holdout")
    }
    assert people["holdout"] and not people["holdout"] & people["retain"]
    assert not people["holdout"] & people["forget"]
    before = (plain / "forget.jsonl").read_bytes()
    assert (held / "forget.jsonl").read_bytes() == before
    old_retain = {r["subject"] for r in read_jsonl(plain / "retain.jsonl")}
    assert people["retain"] | people["holdout"] == old_retain


def test_exclude_drops_exactly_the_forget_people(tmp_path):
    from stages.world.people import drop_people, excluded_people
    from tests.tiny import micro_world

    world = micro_world(tmp_path / "w", holdout_fraction=0.3)
    records = list(read_jsonl(world / "pretrain.jsonl"))
    forget = excluded_people(world, ("forget",))
    kept = drop_people(records, forget)
    dropped = [r for r in records if r not in kept]
    assert dropped and all(r["family"] == "facts" for r in dropped)

    def names(r):
        return f"{r['instruction']} {r['input']}"

    assert all(any(p in names(r) for p in forget) for r in dropped)
    assert not any(p in names(r) for r in kept for p in forget)
    both = drop_people(records, excluded_people(world, ("forget", "holdout")))
    assert len(both) < len(kept)
