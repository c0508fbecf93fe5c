"""World stage: determinism, disjoint splits, families, noise, tokenizer."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest
from pydantic import ValidationError

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from stages.common.io import read_jsonl  # noqa: E402
from stages.common.text import format_prompt, format_response  # noqa: E402
from stages.world import METHODS  # noqa: E402
from stages.world.families import FAMILIES, load_family  # noqa: E402
from tests.tiny import MICRO_WORLD, micro_world  # noqa: E402

MICRO = {**MICRO_WORLD, "eval_per_family": 6}


def build(tmp: Path, **kw: object) -> Path:
    return micro_world(tmp, **{**MICRO, **kw})


def files(folder: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build(tmp_path_factory.mktemp("world") / "world", seed=0)


def text(rec: dict) -> str:
    return format_prompt(rec) + format_response(rec)


def test_same_seed_is_byte_identical_other_seed_differs(world, tmp_path):
    again = files(build(tmp_path / "again", seed=0))
    assert again == files(world)
    other = files(build(tmp_path / "other", seed=1))
    assert other["data.jsonl"] != again["data.jsonl"]
    assert other["eval/facts.jsonl"] != again["eval/facts.jsonl"]


def test_splits_are_disjoint_on_prompt_and_answer(world):
    pool = {text(r) for r in read_jsonl(world / "data.jsonl")}
    pre = {text(r) for r in read_jsonl(world / "pretrain.jsonl")}
    ev = {text(r) for f in (world / "eval").glob("*.jsonl") for r in read_jsonl(f)}
    ppl = set((world / "ppl.txt").read_text().strip("\n").split("\n\n"))
    for a, b in [
        (pool, pre),
        (pool, ev),
        (pool, ppl),
        (pre, ev),
        (pre, ppl),
        (ev, ppl),
    ]:
        assert not a & b


def test_open_families_eval_on_unseen_problems(world):
    def problems(path: Path) -> set[str]:  # a reversal's answer names its problem
        return {r["output"] for r in read_jsonl(path) if r["family"] == "reverse"}

    seen = problems(world / "pretrain.jsonl") | problems(world / "data.jsonl")
    assert problems(world / "eval" / "reverse.jsonl")
    assert not problems(world / "eval" / "reverse.jsonl") & seen


def test_closed_split_leaves_training_phrasings_for_every_problem():
    import random

    from stages.world.families import FamilyConfig
    from stages.world.splits import MIN_TRAIN_PHRASINGS, split_family

    fam = load_family("facts")(random.Random(0), FamilyConfig(facts=5))
    quotas = {"eval": 10, "ppl": 5, "pool": 100, "pretrain": 200}
    parts, unseen = split_family(fam, random.Random(1), quotas)
    assert unseen == frozenset()
    held: dict[tuple, set[int]] = {}
    for split in ("eval", "ppl", "pool"):
        for p, t in parts[split]:
            held.setdefault(p.key, set()).add(t)
    trained: dict[tuple, set[int]] = {}
    for p, t in parts["pretrain"]:
        trained.setdefault(p.key, set()).add(t)
    for p in fam.problems():
        assert len(trained[p.key]) >= MIN_TRAIN_PHRASINGS
        assert not trained[p.key] & held.get(p.key, set())
    assert len(parts["pretrain"]) == 200  # cycled up to its quota


def test_unseen_fraction_holds_closed_problems_out_of_every_training_split():
    import random

    from stages.world.families import FamilyConfig
    from stages.world.splits import split_family

    fam = load_family("facts")(random.Random(0), FamilyConfig(facts=5))
    quotas = {"eval": 10, "ppl": 5, "pool": 100, "pretrain": 200}
    parts, unseen = split_family(fam, random.Random(1), quotas, 0.2, random.Random(2))
    assert len(unseen) == round(0.2 * len(fam.problems()))
    for split in ("ppl", "pool", "pretrain"):
        assert not {p.key for p, _ in parts[split]} & unseen
    assert len(parts["pretrain"]) == 200 and len(parts["eval"]) == 10
    assert sum(p.key in unseen for p, _ in parts["eval"]) == 2  # 20% of eval
    # an open family has no table to hold out: its eval problems are unseen
    rev = load_family("reverse")(random.Random(0), FamilyConfig())
    assert (
        split_family(rev, random.Random(1), quotas, 0.2, random.Random(2))[1] == set()
    )


def test_every_family_in_pool_and_eval_with_correct_answers(world):
    pool = list(read_jsonl(world / "data.jsonl"))
    assert {r["family"] for r in pool} == set(FAMILIES)
    for fam in FAMILIES:
        recs = list(read_jsonl(world / "eval" / f"{fam}.jsonl"))
        assert len(recs) == MICRO["eval_per_family"]
        assert {r["family"] for r in recs} == {fam}
    for r in read_jsonl(world / "eval" / "add.jsonl"):
        a, b = map(int, re.findall(r"\d+", r["instruction"] + " " + r["input"]))
        assert int(r["output"]) == a + b
    ids = [r["id"] for r in pool]
    assert len(set(ids)) == len(ids) and all(i.startswith("pool-") for i in ids)


def test_at_least_five_templates_per_family_and_variant():
    for name in FAMILIES:
        fam = load_family(name)
        for variant in {t.variant for t in fam.templates}:
            n = sum(t.variant in ("", variant) for t in fam.templates)
            assert n >= 5, (name, variant)


def test_world_json_counts_match_files(world):
    meta = json.loads((world / "world.json").read_text())
    assert meta["counts"]["pretrain"] == sum(
        1 for _ in read_jsonl(world / "pretrain.jsonl")
    )
    assert (
        meta["counts"]["pool"]
        == json.loads((world / "dataset.json").read_text())["count"]
    )
    assert set(meta["families"]) == set(FAMILIES)


def test_noise_flags_exactly_the_corrupted_records(world, tmp_path):
    noisy = build(tmp_path / "noisy", seed=0, noise=0.25)
    clean = {r["id"]: r for r in read_jsonl(world / "data.jsonl")}
    recs = list(read_jsonl(noisy / "data.jsonl"))
    flagged = [r for r in recs if r.get("corrupted")]
    assert len(flagged) == round(0.25 * len(recs))
    for r in recs:
        assert (r["output"] != clean[r["id"]]["output"]) == bool(r.get("corrupted"))
    meta = json.loads((noisy / "world.json").read_text())
    assert meta["noise"]["corrupted"] == len(flagged)


def test_unseen_fraction_flags_eval_records_and_keeps_them_out_of_training(
    world, tmp_path
):
    held = build(tmp_path / "held", seed=0, unseen_fraction=0.25)
    meta = json.loads((held / "world.json").read_text())
    closed = {f for f, v in meta["families"].items() if v["closed"]}
    assert set(meta["unseen_problems"]) == closed
    trained = {
        (r["instruction"], r["input"], r["output"])
        for f in ("pretrain.jsonl", "data.jsonl", "retain.jsonl", "forget.jsonl")
        for r in read_jsonl(held / f)
    }
    for fam in meta["families"]:
        recs = list(read_jsonl(held / "eval" / f"{fam}.jsonl"))
        unseen = [r for r in recs if not r["seen"]]
        assert len(unseen) == (round(0.25 * len(recs)) if fam in closed else len(recs))
    facts = [r for r in read_jsonl(held / "eval" / "facts.jsonl") if not r["seen"]]
    people = {r["subject"] for r in read_jsonl(held / "retain.jsonl")}
    for r in facts:  # a held-out fact: its answer never follows its question
        q = (r["instruction"], r["input"])
        assert not any(t[:2] == q and t[2] == r["output"] for t in trained)
    assert people  # retain keeps the people's other facts
    assert "seen" not in next(read_jsonl(world / "eval" / "add.jsonl"))  # default


def test_forget_and_retain_split_people(world):
    forget = list(read_jsonl(world / "forget.jsonl"))
    retain = list(read_jsonl(world / "retain.jsonl"))
    fs, rs = {r["subject"] for r in forget}, {r["subject"] for r in retain}
    assert fs and rs and not fs & rs and len(fs | rs) == MICRO["facts"]
    pre = {text(r) for r in read_jsonl(world / "pretrain.jsonl")}
    assert any(text(r) in pre for r in forget)  # the base model is trained on them


def test_unknown_family_suggests_the_right_name():
    with pytest.raises(ValidationError, match="did you mean 'reverse'"):
        METHODS.load("synthetic").Params(families=["revers"])


def test_tokenizer_round_trips_and_splits_digits(world):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(world / "tokenizer"))
    assert None not in (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
    assert len({tok.bos_token_id, tok.eos_token_id, tok.pad_token_id}) == 3
    docs = (world / "ppl.txt").read_text().split("\n\n")[:10] + ["Zq 12345 ü\n!"]
    for d in docs:
        ids = tok(d, add_special_tokens=False)["input_ids"]
        assert tok.decode(ids) == d
    assert tok("7")["input_ids"][0] == tok.bos_token_id
    pieces = tok.convert_ids_to_tokens(
        tok(" 4096", add_special_tokens=False)["input_ids"]
    )
    assert [p for p in pieces if p.isdigit()] == ["4", "0", "9", "6"]


def test_longest_document_bounds_every_record_in_tokens(world):
    """`carp plan`'s bound on a record's tokens (its sampled longest text in
    bytes, + BOS/EOS) covers every record of every split, and is tight (the
    longest record is within 3x of it)."""
    from tokenizers import Tokenizer

    from pipelines.plan.records import longest_document

    bound = longest_document(METHODS.load("synthetic").Params(**MICRO)) + 2
    tok = Tokenizer.from_file(str(world / "tokenizer" / "tokenizer.json"))
    recs = [r for f in world.rglob("*.jsonl") for r in read_jsonl(f)]
    assert len(recs) > 500
    # BOS + prompt + response + EOS, as stages.common.text.encode_example
    lengths = [
        2
        + len(tok.encode(format_prompt(r), add_special_tokens=False).ids)
        + len(tok.encode(format_response(r), add_special_tokens=False).ids)
        for r in recs
    ]
    assert max(lengths) <= bound < 3 * max(lengths)


def test_table_scale_widens_closed_tables_and_keeps_answers_right(world, tmp_path):
    import random

    from stages.world.families import FamilyConfig

    assert files(build(tmp_path / "s1", seed=0, table_scale=1)) == files(world)
    sizes = {}
    for s in (1, 2):
        cfg = FamilyConfig(facts=6, scale=s)
        sizes[s] = {
            name: len(load_family(name)(random.Random(0), cfg).problems())
            for name in FAMILIES
            if load_family(name).closed
        }
    assert sizes[1]["add"] == 15**2 and sizes[2]["add"] == 30**2
    assert all(sizes[2][n] > sizes[1][n] for n in sizes[1] if n != "translate")
    big = dict(pool_size=6000, seed=0)
    small = list(read_jsonl(build(tmp_path / "p1", **big) / "data.jsonl"))
    wide = build(tmp_path / "p2", table_scale=2, **big)
    recs = list(read_jsonl(wide / "data.jsonl"))
    fams = ("sub", "next_letter", "facts")  # short of phrasings at scale 1
    n1 = {f: sum(r["family"] == f for r in small) for f in FAMILIES}
    n2 = {f: sum(r["family"] == f for r in recs) for f in FAMILIES}
    assert all(n2[f] > n1[f] for f in fams) and all(n2[f] >= n1[f] for f in n1)
    assert len({text(r) for r in recs}) == len(recs)
    for r in recs:
        if r["family"] == "add":
            a, b = map(int, re.findall(r"\d+", r["instruction"] + " " + r["input"]))
            assert int(r["output"]) == a + b and max(a, b) < 30
    assert json.loads((wide / "world.json").read_text())["table_scale"] == 2
