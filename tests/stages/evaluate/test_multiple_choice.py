"""Multiple choice: acc / acc_norm on hand-made option log-likelihoods (lm-eval's
formulas), option scoring against a plain forward pass, items and intervals."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from pipelines.contract import RunContext
from stages.evaluate.compare import compare
from stages.evaluate.intervals import wilson
from stages.evaluate.multiple_choice import (
    choice_metrics,
    encode_pair,
    file_items,
    world_items,
)


def test_acc_and_acc_norm_on_hand_made_log_likelihoods():
    # option 0 is the most likely in total; per character option 1 is
    lls, choices = [-3.0, -4.0, -5.0], ["a", "bbbb", "cc"]
    assert choice_metrics(lls, choices, 0) == {"acc": 1.0, "acc_norm": 0.0}
    assert choice_metrics(lls, choices, 1) == {"acc": 0.0, "acc_norm": 1.0}
    assert choice_metrics(lls, choices, 2) == {"acc": 0.0, "acc_norm": 0.0}
    assert choice_metrics([-1.0, -1.0], ["x", "y"], 0)["acc"] == 1.0  # first tie
    rng = np.random.default_rng(0)
    for _ in range(200):  # lm-eval: argmax(lls), argmax(lls / completion_len)
        n = int(rng.integers(2, 6))
        ll = -rng.gamma(2.0, 3.0, size=n)
        ch = ["z" * int(k) for k in rng.integers(1, 9, size=n)]
        gold = int(rng.integers(n))
        got = choice_metrics(ll.tolist(), ch, gold)
        lens = np.array([float(len(c)) for c in ch])
        assert got["acc"] == float(np.argmax(ll) == gold)
        assert got["acc_norm"] == float(np.argmax(ll / lens) == gold)


@pytest.fixture(scope="module")
def tiny():
    import torch

    from tests.tiny import char_tokenizer, tiny_llama

    torch.set_num_threads(1)
    tok = char_tokenizer()
    return tok, tiny_llama(tok, hidden=32, layers=1, heads=2, kv_heads=1)


def test_encode_pair_moves_trailing_space_into_the_continuation(tiny):
    tok, _ = tiny
    ctx, cont = encode_pair(tok, "Q: 2+2?\nA: ", " 4")
    enc = tok("Q: 2+2?\nA:", add_special_tokens=False)["input_ids"]
    assert ctx == [tok.bos_token_id, *enc]
    assert cont == tok("  4", add_special_tokens=False)["input_ids"]


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_suite_scores_each_option_as_a_plain_forward_pass(tiny, tmp_path):
    import torch

    from stages.evaluate import multiple_choice as suite
    from stages.evaluate.world import Params

    tok, model = tiny
    items = [
        {"question": "Q: 1+1?\nA:", "choices": ["2", "11", "3"], "answer": 0},
        {"question": "Sky is", "choices": ["blue", "green"], "answer": "green"},
        {"question": "x", "choices": ["yy", "y"], "answer": 1, "id": "k"},
    ]
    path = _write(tmp_path / "mc.jsonl", items)
    p = Params(models=["m"], data="w", choices_file=str(path), batch_size=2)
    got = suite.score(model, tok, tmp_path, p, RunContext(), tmp_path, "m")
    rows = [json.loads(x) for x in (tmp_path / "choices" / "m.jsonl").open()]
    assert [r["id"] for r in rows] == ["0", "1", "k"]
    accs, norms = [], []
    for it, row in zip(items, rows, strict=True):
        want = []
        for c in it["choices"]:  # bos + question, then " " + option, one by one
            q = tok(it["question"], add_special_tokens=False)["input_ids"]
            o = tok(" " + c, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([[tok.bos_token_id, *q, *o]])
            with torch.no_grad():
                logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
            start = 1 + len(q)
            want.append(sum(logp[start - 1 + j, t].item() for j, t in enumerate(o)))
        assert row["lls"] == pytest.approx(want, rel=1e-6)
        gold = it["answer"]
        gold = it["choices"].index(gold) if isinstance(gold, str) else gold
        accs.append(float(np.argmax(want) == gold))
        lens = np.array([len(c) for c in it["choices"]], dtype=float)
        norms.append(float(np.argmax(np.array(want) / lens) == gold))
    assert got == {"mc/acc": np.mean(accs), "mc/acc_norm": np.mean(norms)}


def test_choices_file_errors_name_the_line_and_field(tmp_path):
    bad = _write(tmp_path / "bad.jsonl", [{"question": "q", "choices": ["a", "b"]}])
    with pytest.raises(ValueError, match=r"bad.jsonl:1: 'answer'"):
        file_items(bad)
    one = _write(tmp_path / "one.jsonl", [{"question": "q", "choices": ["a"]}])
    with pytest.raises(ValueError, match=r"one.jsonl:1: 'choices'"):
        file_items(one)
    with pytest.raises(FileNotFoundError, match="choices_file"):
        file_items(tmp_path / "missing.jsonl")


def test_world_items_hold_the_reference_among_distinct_family_answers():
    from tests.tiny import records

    recs = records(40)
    sets = {f: [r for r in recs if r["family"] == f] for f in ("add", "reverse")}
    items = world_items(sets, n_choices=4, seed=3)
    assert len(items) == 40 and items == world_items(sets, 4, seed=3)
    by_id = {r["id"]: r for r in recs}
    golds = set()
    for it in items:
        rec = by_id[it["id"]]
        assert it["choices"][it["answer"]] == rec["output"]
        assert len(set(it["choices"])) == len(it["choices"]) == 4
        fam = {r["output"] for r in sets[rec["family"]]}
        assert set(it["choices"]) <= fam
        golds.add(it["answer"])
    assert golds == {0, 1, 2, 3}  # the reference is not always in one place


def test_compare_gives_mc_accuracy_a_wilson_interval_and_a_paired_difference(
    tmp_path,
):
    (tmp_path / "choices").mkdir()
    hits = {"a": [1] * 30 + [0] * 20, "b": [1] * 45 + [0] * 5}  # b fixes 15
    results = {}
    for m, hs in hits.items():
        rows = [
            {"id": i, "family": "mc", "acc": h, "acc_norm": h, "lls": []}
            for i, h in enumerate(hs)
        ]
        _write(tmp_path / "choices" / f"{m}.jsonl", rows)
        results[m] = {"mc/acc": sum(hs) / 50, "mc/acc_norm": sum(hs) / 50}
    diffs = compare(tmp_path, ["a", "b"], results, seed=0)
    assert (results["a"]["mc/acc_lo"], results["a"]["mc/acc_hi"]) == wilson(30, 50)
    d = diffs["b-vs-a"]
    assert d["mc/acc"] == pytest.approx(0.3)
    assert 0 < d["mc/acc_lo"] < 0.3 < d["mc/acc_hi"] < 1
    assert not math.isnan(d["mc/acc_norm_lo"])
