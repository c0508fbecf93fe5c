"""The MUSE-style unlearning suite: Min-K% / Min-K%++ AUC, ROUGE-L, PrivLeak,
and the suite on a micro world with a holdout set."""

import math
import random

import pytest
import torch

from stages.evaluate.mia import (
    auc,
    bootstrap_aucs,
    min_k,
    min_k_plus_plus,
    percentile_interval,
    privleak,
    rouge_l,
    token_stats,
)


def test_min_k_takes_the_lowest_fraction():
    lp = [-0.1, -3.0, -0.5, -2.0, -0.2]
    assert min_k(lp, 0.4) == pytest.approx((-3.0 - 2.0) / 2)
    assert min_k(lp, 0.01) == pytest.approx(-3.0)  # at least one token
    assert min_k(lp, 1.0) == pytest.approx(sum(lp) / 5)


def test_min_k_auc_separable_and_identical():
    rng = random.Random(0)
    members = [[rng.uniform(-1.0, -0.1) for _ in range(12)] for _ in range(30)]
    others = [[rng.uniform(-6.0, -2.0) for _ in range(12)] for _ in range(30)]
    m = [min_k(x, 0.4) for x in members]
    o = [min_k(x, 0.4) for x in others]
    assert auc(m, o) == 1.0
    assert auc(o, m) == 0.0
    assert auc(m, m) == pytest.approx(0.5)  # identical distributions: chance
    # same distribution, independent draws: near chance
    more = [[rng.uniform(-1.0, -0.1) for _ in range(12)] for _ in range(300)]
    half = [min_k(x, 0.4) for x in more]
    assert abs(auc(half[:150], half[150:]) - 0.5) < 0.1


def test_bootstrap_aucs_match_the_auc_and_are_paired():
    rng = random.Random(1)
    sep_pos = [[rng.uniform(1, 2) for _ in range(20)]]
    sep_neg = [[rng.uniform(-2, -1) for _ in range(15)]]
    assert (bootstrap_aucs(sep_pos, sep_neg, 0) == 1.0).all()  # separable: 1.0
    same = [[0.3] * 10]
    assert (bootstrap_aucs(same, same, 0) == 0.5).all()  # all ties: 0.5
    pos = [rng.gauss(0.5, 1) for _ in range(40)]
    neg = [rng.gauss(0.0, 1) for _ in range(30)]
    boot = bootstrap_aucs([pos, pos], [neg, neg], 3)  # two identical scorers
    assert (boot[0] == boot[1]).all()  # same resamples: paired
    lo, hi = percentile_interval(boot[0])
    point = auc(pos, neg)
    assert lo < point < hi and hi - lo < 0.5
    assert abs(float(boot[0].mean()) - point) < 0.03
    assert percentile_interval([float("nan"), 1.0, 1.0]) == (1.0, 1.0)


def test_min_k_plus_plus_standardises_by_the_vocab_distribution():
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    tgt, mu, var = token_stats(logits, torch.tensor([0, 2]))
    p = torch.softmax(logits.double(), -1)
    lp = p.log()
    assert float(mu[0]) == pytest.approx(float((p[0] * lp[0]).sum()))
    assert float(var[1]) == pytest.approx(0.0, abs=1e-12)  # uniform: no spread
    z0 = (float(tgt[0]) - float(mu[0])) / math.sqrt(float(var[0]))
    z1 = (float(tgt[1]) - float(mu[1])) / math.sqrt(1e-6)
    assert min_k_plus_plus(tgt.tolist(), mu.tolist(), var.tolist(), 1.0) == (
        pytest.approx((z0 + z1) / 2)
    )


def test_rouge_l_hand_computed():
    # LCS "the cat on the mat" = 5 of 6 words each side: P = R = F = 5/6
    assert rouge_l("the cat sat on the mat", "the cat is on the mat") == (
        pytest.approx(5 / 6)
    )
    # LCS "b d" = 2: P = 2/4, R = 2/3, F = 2PR/(P+R) = 4/7
    assert rouge_l("a b c d", "b d e") == pytest.approx(4 / 7)
    assert rouge_l("Lakeville", "lakeville") == 1.0  # rouge-score lowercases
    assert rouge_l("", "x") == 0.0


def test_privleak_relative_to_oracle():
    assert privleak(0.5, 0.5) == 0.0
    assert privleak(0.75, 0.5) == pytest.approx(50.0)
    assert privleak(0.25, 0.5) == pytest.approx(-50.0)


def memorise(model, tok, recs, steps: int) -> None:
    """AdamW on the whole text of ``recs`` (prompt and response), as pretraining
    sees it, so the records become members."""
    from stages.common.text import collate, encode_example

    rows = [encode_example(tok, r) for r in recs]
    b = collate([(ids, ids) for ids, _ in rows], tok.pad_token_id)
    b["labels"][b["attention_mask"] == 0] = -100
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        model(**b).loss.backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def test_suite_on_micro_world(tmp_path):
    """Every metric is produced and bounded; the oracle's PrivLeak is 0 and the
    memorising model scores forget records as members (AUC > 0.5)."""
    from pipelines.contract import RunContext
    from stages.common.io import read_jsonl
    from stages.evaluate.world import Params, evaluate
    from tests.tiny import (
        micro_world,
        tiny_llama,
        world_tokenizer,
        write_checkpoint,
    )

    torch.set_num_threads(1)
    world = micro_world(tmp_path / "world", holdout_fraction=0.3)
    tok = world_tokenizer(world)
    forget = list(read_jsonl(world / "forget.jsonl"))
    assert (world / "holdout.jsonl").exists()
    seen = tiny_llama(tok, seed=0, hidden=32, max_positions=256)
    memorise(seen, tok, forget[:12], steps=40)
    write_checkpoint(seen, tok, tmp_path / "seen")
    write_checkpoint(tiny_llama(tok, seed=1, hidden=32), tok, tmp_path / "oracle")
    params = Params(
        models=["seen", "oracle"],
        data="world",
        suites=["unlearning"],
        oracle="oracle",
        unlearning_samples=12,
        batch_size=16,
    )
    out = tmp_path / "out"
    out.mkdir()
    res = evaluate(
        params,
        {"models": [tmp_path / "seen", tmp_path / "oracle"], "data": world},
        out,
        RunContext(seed=0),
    ).metrics
    for m in ("seen", "oracle"):
        for k in ("verbmem_forget", "knowmem_forget", "knowmem_retain", "mink_auc"):
            assert 0.0 <= res[f"{m}/unlearn/{k}"] <= 1.0
    assert res["oracle/unlearn/privleak_mink"] == 0.0
    assert res["oracle/unlearn/privleak_mink_lo"] == 0.0  # paired with itself
    for m in ("seen", "oracle"):
        for k in (
            "verbmem_forget",
            "knowmem_forget",
            "em_retain",
            "mink_auc",
            "privleak_minkpp",
        ):
            v = res[f"{m}/unlearn/{k}"]
            assert res[f"{m}/unlearn/{k}_lo"] <= v <= res[f"{m}/unlearn/{k}_hi"], k
    assert (out / "membership" / "seen.jsonl").exists()
    assert res["seen/unlearn/mink_auc"] > 0.5
    assert res["seen/unlearn/privleak_mink"] > 0.0
    assert "unlearn/privleak_mink" in (out / "table.md").read_text()


def test_oracle_must_be_a_scored_model():
    from pydantic import ValidationError

    from stages.evaluate.world import Params

    with pytest.raises(ValidationError, match="oracle"):
        Params(models=["a"], data="w", suites=["unlearning"], oracle="b")
