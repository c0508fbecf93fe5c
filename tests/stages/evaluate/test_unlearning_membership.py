"""Membership inference on a world's forget vs holdout people, through the
suite's own scoring (``membership_scores``, ``auc_with_interval``), with
count-based language models whose training data is known exactly:

* a model trained on neither set (the oracle's data: the world's pretraining
  records without the forget and holdout people) scores the two sets alike:
  AUC near 0.5, inside the person-level interval;
* a model trained on the forget records separates them: AUC 1.0;
* a model that saw only the forget people's *prompts* (it knows who, not their
  facts) separates them on the whole document but not on the response.
"""

from __future__ import annotations

import math
import random
from collections import Counter, defaultdict
from types import SimpleNamespace

import pytest
import torch

from stages.common.io import read_jsonl


class PrefixLM(torch.nn.Module):
    """Memorises its training sequences: p(next | prefix) = (c(prefix, next) +
    u(next)) / (c(prefix) + 1), with u the add-one unigram of the training
    tokens; an unseen prefix gets u. A perfect memoriser with a prior."""

    def __init__(self, seqs: list[list[int]], vocab: int):
        super().__init__()
        uni = Counter(t for s in seqs for t in s[1:])
        total = sum(uni.values()) + vocab
        self.log_u = torch.tensor(
            [math.log((uni[i] + 1) / total) for i in range(vocab)], dtype=torch.float64
        )
        self.next: dict[tuple[int, ...], Counter] = defaultdict(Counter)
        for s in seqs:
            for t in range(1, len(s)):
                self.next[tuple(s[:t])][s[t]] += 1
        self.cache: dict[tuple[int, ...], torch.Tensor] = {}

    def log_probs(self, prefix: tuple[int, ...]) -> torch.Tensor:
        """log p(· | prefix), cached per prefix."""
        if prefix not in self.cache:
            seen = self.next.get(prefix)
            if not seen:
                self.cache[prefix] = self.log_u
            else:
                c = torch.zeros_like(self.log_u)
                c[list(seen)] = torch.tensor(list(seen.values()), dtype=c.dtype)
                total = sum(seen.values()) + 1
                self.cache[prefix] = torch.log((c + self.log_u.exp()) / total)
        return self.cache[prefix]

    def forward(self, input_ids, attention_mask=None):
        rows = [
            torch.stack([self.log_probs(tuple(ids[: t + 1])) for t in range(len(ids))])
            for ids in input_ids.tolist()
        ]
        return SimpleNamespace(logits=torch.stack(rows))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from tests.tiny import micro_world

    # 48 people: 12 forgotten, 14 held out (a person-level interval needs people)
    return micro_world(
        tmp_path_factory.mktemp("mia") / "world",
        families=["facts"],
        facts=48,
        forget_fraction=0.25,
        holdout_fraction=0.4,
    )


def _auc(model, tok, world, tokens: str) -> dict[str, float]:
    from stages.evaluate.unlearning import (
        _records,
        auc_with_interval,
        membership_scores,
        subjects,
    )

    forget, holdout = (_records(world, n, None) for n in ("forget", "holdout"))
    f_mk = membership_scores(model, tok, forget, 0.4, 64, tokens)[0]
    h_mk = membership_scores(model, tok, holdout, 0.4, 64, tokens)[0]
    groups = (subjects(forget), subjects(holdout))
    return auc_with_interval("auc", f_mk, h_mk, [0], groups)


def _ids(tok, records, prompt_only: bool = False) -> list[list[int]]:
    from stages.common.text import encode_example

    out = []
    for r in records:
        ids, labels = encode_example(tok, r, 10**6)
        out.append(
            [i for i, lab in zip(ids, labels, strict=True) if lab == -100]
            if prompt_only
            else ids
        )
    return out


def test_model_trained_on_neither_set_is_at_chance(world):
    """The oracle's training data (pretraining minus both sets' people): forget
    and holdout records are exchangeable, so AUC ~ 0.5 in either token scope."""
    from stages.world.people import drop_people, excluded_people
    from tests.tiny import world_tokenizer

    tok = world_tokenizer(world)
    pretrain = list(read_jsonl(world / "pretrain.jsonl"))
    kept = drop_people(pretrain, excluded_people(world, ("forget", "holdout")))
    assert len(kept) < len(pretrain)  # the forget/holdout people were there
    oracle = PrefixLM(_ids(tok, kept), len(tok))
    for tokens in ("response", "document"):
        res = _auc(oracle, tok, world, tokens)
        assert res["auc_lo"] < 0.5 < res["auc_hi"], (tokens, res)
        assert abs(res["auc"] - 0.5) < 0.15, (tokens, res)


def test_model_trained_on_the_forget_records_separates_them(world):
    from tests.tiny import world_tokenizer

    tok = world_tokenizer(world)
    retain = list(read_jsonl(world / "retain.jsonl"))
    forget = list(read_jsonl(world / "forget.jsonl"))
    member = PrefixLM(_ids(tok, retain + forget), len(tok))
    for tokens in ("response", "document"):
        res = _auc(member, tok, world, tokens)
        assert res["auc"] == 1.0 and res["auc_lo"] == 1.0, (tokens, res)


def test_knowing_the_names_is_not_knowing_the_facts(world):
    """Trained on the forget people's prompts only: the whole document gives
    them away (the names are memorised), the response does not."""
    from tests.tiny import world_tokenizer

    tok = world_tokenizer(world)
    retain = list(read_jsonl(world / "retain.jsonl"))
    forget = list(read_jsonl(world / "forget.jsonl"))
    names_only = PrefixLM(
        _ids(tok, retain) + _ids(tok, forget, prompt_only=True), len(tok)
    )
    assert _auc(names_only, tok, world, "document")["auc"] > 0.99
    res = _auc(names_only, tok, world, "response")
    assert res["auc_lo"] < 0.5 < res["auc_hi"] and abs(res["auc"] - 0.5) < 0.15, res


def test_person_bootstrap_is_wider_than_the_record_bootstrap():
    """Records of one person share its score level: resampling records treats
    15 correlated records as 15 witnesses; resampling people does not (AUCs
    and means alike)."""
    from stages.evaluate.intervals import stratified_bootstrap
    from stages.evaluate.mia import (
        bootstrap_aucs,
        cluster_bootstrap,
        percentile_interval,
    )

    rng = random.Random(0)
    members, m_groups, others, o_groups = [], [], [], []
    for p in range(8):  # same distribution of person levels on both sides
        for scores, groups, side in ((members, m_groups, "m"), (others, o_groups, "o")):
            level = rng.gauss(0, 1)
            scores += [level + rng.gauss(0, 0.1) for _ in range(15)]
            groups += [f"{side}{p}"] * 15
    lo_r, hi_r = percentile_interval(bootstrap_aucs([members], [others], 0)[0])
    boot = bootstrap_aucs([members], [others], 0, 2000, m_groups, o_groups)[0]
    lo_p, hi_p = percentile_interval(boot)
    assert hi_p - lo_p > 2 * (hi_r - lo_r)
    assert lo_p < 0.5 < hi_p  # same distribution of people: chance is inside
    with pytest.raises(ValueError, match="groups"):
        bootstrap_aucs([members], [others], 0, 10, m_groups[:-1], o_groups)
    # the same for a mean (ROUGE-L, EM, NLL of the suite)
    lo_c, hi_c = cluster_bootstrap(members, m_groups, 0)
    lo_s, hi_s = stratified_bootstrap([members], 0)
    assert lo_c < sum(members) / len(members) < hi_c
    assert hi_c - lo_c > 2 * (hi_s - lo_s)
    lo_1, hi_1 = cluster_bootstrap(members, list(range(len(members))), 0)
    assert abs((hi_1 - lo_1) - (hi_s - lo_s)) < 0.25 * (hi_s - lo_s)  # singletons


def test_sample_spreads_over_people(world):
    """``unlearning_samples`` takes a seeded sample, not the first records
    (which would be the first few people)."""
    from stages.evaluate.unlearning import _records

    full = _records(world, "forget", None)
    first = {r["subject"] for r in full[:45]}
    sample = _records(world, "forget", 45, seed=0)
    assert len(sample) == 45 and sample == _records(world, "forget", 45, seed=0)
    assert sample != _records(world, "forget", 45, seed=1)
    assert len({r["subject"] for r in sample}) > 2 * len(first)
    assert [r["id"] for r in sample] == sorted(
        (r["id"] for r in sample), key=lambda i: int(i.split("-")[1])
    )
