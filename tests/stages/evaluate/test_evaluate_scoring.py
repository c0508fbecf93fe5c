"""Evaluate: pure scoring functions and both suites against direct formulas."""

from __future__ import annotations

import json
import math
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from pipelines.contract import RunContext  # noqa: E402
from stages.evaluate.scoring import (  # noqa: E402
    bits_per_byte,
    continuation_nll,
    count_bytes,
    count_words,
    exact_match,
    normalize_answer,
    perplexity,
    rolling_windows,
)


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory):
    """A micro world and a pico Llama (random init) on its tokenizer."""
    import torch

    from tests.tiny import micro_world, tiny_llama, world_tokenizer

    torch.set_num_threads(1)
    world = micro_world(tmp_path_factory.mktemp("eval") / "world")
    tok = world_tokenizer(world)
    model = tiny_llama(tok, hidden=32, heads=2, kv_heads=1, max_positions=256)
    return world, tok, model


def test_exact_match_normalises_whitespace_and_cuts_at_newline():
    assert normalize_answer("  42 \nQ: next") == "42"
    assert exact_match(" a k d", "a k d") == 1.0
    assert exact_match("a k", "a k d") == 0.0
    assert exact_match("Pubusdi\n", " Pubusdi ") == 1.0


def test_word_and_byte_counts_follow_lm_eval():
    assert count_words("a b\n c") == 3
    assert count_words(" a b") == 3  # lm-eval's re.split counts a leading ""
    assert count_bytes("é a") == 4
    assert bits_per_byte(8 * math.log(2), 4) == pytest.approx(2.0)


def test_rolling_windows_match_lm_eval_by_hand():
    toks = list(range(10, 20))
    got = rolling_windows(toks, prefix_token=0, max_len=4)
    assert got == [
        ([0], [10, 11, 12, 13]),
        ([13], [14, 15, 16, 17]),
        ([15, 16, 17], [18, 19]),
    ]
    for ctx, cont in got:  # model inputs never exceed max_len
        assert len(ctx + cont) - 1 <= 4
    assert [t for _, cont in got for t in cont] == toks  # each token once


def test_continuation_nll_equals_hand_log_softmax():
    import torch

    torch.manual_seed(0)
    logits = torch.randn(2, 5, 7)
    targets, lengths = [[3, 1], [6]], [4, 2]
    got = continuation_nll(logits, targets, lengths)

    def nll(row: int, pos: int, tok: int) -> float:
        z = logits[row, pos].double()
        return -(z[tok] - math.log(sum(math.exp(v) for v in z.tolist()))).item()

    want = [nll(0, 2, 3) + nll(0, 3, 1), nll(1, 1, 6)]
    assert got.tolist() == pytest.approx(want, rel=1e-9)
    assert perplexity(2 * math.log(3.0), 2) == pytest.approx(3.0)


def test_perplexity_suite_equals_plain_cross_entropy(setup):
    import torch

    from stages.evaluate import perplexity as suite
    from stages.evaluate.world import Params

    world, tok, model = setup
    docs = suite.documents(world)
    total, count = 0.0, 0
    words = sum(len(d.split()) for d in docs)  # no doc starts/ends with a space
    n_bytes = sum(len(d.encode("utf-8")) for d in docs)
    for d in docs:  # bos + doc, every doc token predicted once
        ids = torch.tensor(
            [[tok.bos_token_id, *tok(d, add_special_tokens=False)["input_ids"]]]
        )
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        ce = torch.nn.functional.cross_entropy(
            logits[0, :-1].double(), ids[0, 1:], reduction="sum"
        )
        total, count = total + ce.item(), count + ids.shape[1] - 1
    want = math.exp(total / count)
    p = Params(models=["m"], data="w", batch_size=5)
    res = suite.score(model, tok, world, p, RunContext())
    assert res["ppl"] == pytest.approx(want, rel=1e-5)
    # lm-eval's word perplexity and bits per byte: the same NLL over words/bytes
    assert res["word_perplexity"] == pytest.approx(math.exp(total / words), rel=1e-5)
    bpb = total / n_bytes / math.log(2)
    assert res["bits_per_byte"] == pytest.approx(bpb, rel=1e-5)
    assert words < count and res["word_perplexity"] > res["ppl"]
    # short windows roll over each document: same tokens scored, batch-invariant
    short = Params(models=["m"], data="w", max_len=8, batch_size=3)
    one = short.model_copy(update={"batch_size": 1})
    a = suite.score(model, tok, world, short, RunContext())["ppl"]
    b = suite.score(model, tok, world, one, RunContext())["ppl"]
    assert a == pytest.approx(b, rel=1e-6) and math.isfinite(a)


def test_answer_perplexity_equals_a_plain_forward_on_answer_tokens(setup, tmp_path):
    """bos + prompt as context; the answer and eos scored, one record at a time."""
    import torch

    from stages.common.text import format_prompt, format_response
    from stages.evaluate import perplexity as suite
    from stages.evaluate.exact_match import eval_sets
    from stages.evaluate.world import Params

    world, tok, model = setup
    recs = [r for rs in eval_sets(world, 3).values() for r in rs]
    total, count = 0.0, 0
    for r in recs:
        prompt = tok(format_prompt(r), add_special_tokens=False)["input_ids"]
        answer = tok(format_response(r), add_special_tokens=False)["input_ids"]
        answer = answer + [tok.eos_token_id]
        ids = torch.tensor([[tok.bos_token_id, *prompt, *answer]])
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0].double()
        start = 1 + len(prompt)  # first answer token's position
        ce = torch.nn.functional.cross_entropy(
            logits[start - 1 : -1], ids[0, start:], reduction="sum"
        )
        total, count = total + ce.item(), count + len(answer)
    p = Params(models=["m"], data="w", batch_size=4, max_samples_per_family=3)
    got = suite.score(model, tok, world, p, RunContext(), tmp_path, "m")
    assert got["ppl_answer"] == pytest.approx(math.exp(total / count), rel=1e-6)
    rows = [json.loads(x) for x in (tmp_path / "answers" / "m.jsonl").open()]
    assert [r["id"] for r in rows] == [r["id"] for r in recs]
    assert sum(r["tokens"] for r in rows) == count
    assert sum(r["nll"] for r in rows) == pytest.approx(total, rel=1e-6)


def test_batched_left_padded_generation_equals_one_by_one(setup):
    from stages.evaluate.exact_match import eval_sets, per_family_em
    from stages.evaluate.generation import greedy_generate

    world, tok, model = setup
    recs = [r for rs in eval_sets(world, 2).values() for r in rs]
    batched = greedy_generate(model, tok, recs, 4, batch_size=len(recs))
    single = [greedy_generate(model, tok, [r], 4, batch_size=1)[0] for r in recs]
    assert batched == single
    # per-family EM against a hand count: make the first prediction correct
    preds = [recs[0]["output"]] + ["#"] * (len(recs) - 1)
    em = per_family_em(recs, preds)
    fam0 = recs[0]["family"]
    assert em[f"em/{fam0}"] == 0.5
    assert em["em/mean"] == pytest.approx(0.5 / len({r["family"] for r in recs}))
