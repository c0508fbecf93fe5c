"""carp's PASER options (``mode: carp``) on hand-made inputs: damage-mass
allocation, the loss-increase score, the noise flag on a pool with known
corrupted records, the profile of defaults, and the fill with flagged records."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.select.budget import allocate
from stages.select.kernels import response_jsd, response_nll, response_pair_scores
from stages.select.paser import Params, allocate_and_fill
from stages.select.robust import (
    cluster_weights,
    degradation,
    implausible,
    robust_z,
    with_coverage,
    within_order,
)

torch.set_num_threads(1)


def _params(**kw):
    return Params(pool="w", model="p", reference="b", budget=10, **kw)


# -- allocation ----------------------------------------------------------------


def test_mass_allocation_follows_cluster_size_and_damage():
    # the case: one lightly damaged family split into six phrasing
    # clusters of 55, one heavily damaged family in one cluster of 330
    sizes = [55] * 6 + [330]
    scores = np.r_[np.full(330, 0.05), np.full(330, 0.10)]
    members = [np.arange(55 * c, 55 * (c + 1)) for c in range(6)] + [
        np.arange(330, 660)
    ]
    cds = cluster_weights("cds", scores, members)
    mass = cluster_weights("mass", scores, members)
    assert cds == pytest.approx([0.05] * 6 + [0.10])
    assert mass == pytest.approx([2.75] * 6 + [33.0])
    by_cds = allocate(120, cds, sizes)
    by_mass = allocate(120, mass, sizes)
    # CDS gives the six small clusters 3/4 of the budget; mass gives the
    # damaged family its share of the total damage (33 / 49.5 = 2/3)
    assert sum(by_cds[:6]) == 90 and by_cds[6] == 30
    assert by_mass[6] >= 80 and sum(by_mass) == 120
    assert cluster_weights("uniform", scores, members + [np.arange(0)])[-1] == 0.0
    with pytest.raises(ValueError, match="allocation"):
        cluster_weights("max", scores, members)


def test_mass_allocation_capped_and_redistributed():
    # a tiny cluster with a huge damage mass cannot take more than it holds
    scores = np.r_[np.full(3, 50.0), np.full(40, 1.0), np.full(60, 0.5)]
    members = [np.arange(3), np.arange(3, 43), np.arange(43, 103)]
    w = cluster_weights("mass", scores, members)
    out = allocate(30, w, [3, 40, 60])
    assert out[0] == 3 and sum(out) == 30
    # the 27 left go by weight 40 : 30 between the other two
    assert out[1] > out[2] and abs(out[1] / out[2] - 40 / 30) < 0.15


def test_coverage_blends_size_share_with_the_rule():
    # one ruined cluster of 100 and four intact clusters of 100 (no damage)
    sizes = [100] * 5
    scores = np.r_[np.full(100, 2.0), np.zeros(400)]
    members = [np.arange(100 * c, 100 * (c + 1)) for c in range(5)]
    mass = cluster_weights("mass", scores, members)
    assert allocate(100, mass, sizes) == [100, 0, 0, 0, 0]
    # coverage c: a share c of the budget follows |C_k| (20 each at c = 1),
    # the rest the damage mass
    for c, want in ((0.0, [100, 0, 0, 0, 0]), (0.5, [60, 10, 10, 10, 10])):
        assert allocate(100, with_coverage(mass, sizes, c), sizes) == want
    full = with_coverage(mass, sizes, 1.0)
    assert allocate(100, full, sizes) == [20] * 5
    assert with_coverage(mass, sizes, 0.0) == mass
    # no damage anywhere: sizes alone, whatever the share
    assert allocate(20, with_coverage([0.0] * 2, [30, 10], 0.3), [30, 10]) == [15, 5]
    with pytest.raises(ValueError, match="coverage"):
        with_coverage(mass, sizes, 1.5)


def test_within_order_random_is_a_seeded_permutation_with_flags_last():
    members = np.arange(10, 30)
    score = np.linspace(0, 1, 40)
    flags = np.zeros(40, bool)
    flags[[12, 25]] = True
    ies_order = within_order(members, score, flags, "ies", 0)
    assert ies_order[:3] == [29, 28, 27] and ies_order[-2:] == [25, 12]
    a = within_order(members, score, flags, "random", 3)
    b = within_order(members, score, flags, "random", 3)
    c = within_order(members, score, flags, "random", 4)
    assert a == b and a != c and sorted(a) == members.tolist()
    assert set(a[-2:]) == {12, 25}  # flagged records still come last
    # not the IES order: a random order's top half is not the top-scored half
    assert set(a[:9]) != set(ies_order[:9])
    with pytest.raises(ValueError, match="within"):
        within_order(members, score, flags, "best", 0)


def test_within_random_fill_is_a_stratified_sample():
    # clusters 0/1 of 200 records each; damage sends the quota to cluster 0,
    # and inside it `random` spreads over the whole score range
    labels = np.r_[np.zeros(200, int), np.ones(200, int)]
    scores = np.r_[np.linspace(0.0, 1.0, 200), np.full(200, 0.01)]
    pool = [{"instruction": f"t{i}", "output": str(i)} for i in range(400)]
    ntok = np.full(400, 20)
    p = _params(mode="carp", concept_filter=False, noise_filter="none")
    top = allocate_and_fill(p, pool, labels, scores, ntok, 40)[0].selected
    rnd_p = p.model_copy(update={"within": "random"})
    rnd = allocate_and_fill(rnd_p, pool, labels, scores, ntok, 40, None, 7)[0]
    assert sorted(top) == list(range(160, 200))  # the 40 most damaged
    picked = np.array([i for i in rnd.selected if i < 200])
    assert len(picked) == len(top) and picked.min() < 60 and picked.max() > 140
    again = allocate_and_fill(rnd_p, pool, labels, scores, ntok, 40, None, 7)[0]
    assert again.selected == rnd.selected


# -- degradation -----------------------------------------------------------------


def test_loss_increase_score():
    pair = np.array([[0.2, 0.1, 2.1], [0.3, 1.0, 0.4], [0.0, 0.5, 0.5]])
    assert degradation("loss_increase", pair).tolist() == pytest.approx([2.0, 0, 0])
    assert degradation("jsd", pair).tolist() == pytest.approx([0.2, 0.3, 0.0])
    with pytest.raises(ValueError, match="degradation"):
        degradation("kl", pair)


def test_pair_kernel_matches_single_kernels():
    g = torch.Generator().manual_seed(0)
    lo = torch.randn(3, 7, 11, generator=g)
    lp = torch.randn(3, 7, 11, generator=g)
    labels = torch.randint(0, 11, (3, 7), generator=g)
    labels[:, :3] = -100
    labels[2, 5:] = -100
    out = response_pair_scores(lo, lp, labels)
    assert out.shape == (3, 3)
    assert torch.allclose(out[:, 0], response_jsd(lo, lp, labels), atol=1e-6)
    assert torch.allclose(out[:, 1], response_nll(lo, labels), atol=1e-5)
    assert torch.allclose(out[:, 2], response_nll(lp, labels), atol=1e-5)


# -- noise flag ------------------------------------------------------------------


def _noisy_pool(seed=0):
    """Three clusters of original-model answer losses at different levels;
    every 10th record is corrupted (a wrong answer: a far higher loss)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat([0, 1, 2], 100)
    base = np.array([0.05, 0.4, 1.2])[labels]
    nll = base * np.exp(rng.normal(0, 0.2, 300))
    bad = np.arange(300) % 10 == 3
    nll[bad] = base[bad] * 6 + 0.5
    return nll, labels, bad


def test_noise_flag_finds_the_corrupted_records():
    nll, labels, bad = _noisy_pool()
    flags = implausible(nll, labels, 3.5)
    # every corrupted record, and few clean ones (the lognormal tail: <= 1%)
    assert flags[bad].all() and flags[~bad].sum() <= 3
    # a global threshold could not: most of cluster 2's clean losses exceed
    # cluster 0's corrupted ones, so z is taken within the cluster
    assert np.median(nll[(labels == 2) & ~bad]) > nll[(labels == 0) & bad].max()
    # low outliers (an easy record) are never flagged
    nll2 = nll.copy()
    nll2[0] = 0.0
    assert not implausible(nll2, labels, 3.5)[0]


def test_robust_z_degenerate_clusters():
    labels = np.array([0, 0, 0, 0, 1, 1, 1])
    # cluster 0: MAD 0 (three equal values) -> mean absolute deviation
    z = robust_z(np.array([1.0, 1.0, 1.0, 5.0, 2.0, 2.0, 2.0]), labels)
    assert z[3] == pytest.approx(4.0 / (1.2533 * 1.0))
    assert z[:3].tolist() == [0, 0, 0] and z[4:].tolist() == [0, 0, 0]


def test_fill_drops_or_demotes_flagged_records():
    nll, labels, bad = _noisy_pool(1)
    flags = implausible(nll, labels, 3.5)
    pool = [{"instruction": f"t{i}", "output": str(i)} for i in range(300)]
    # the damage score favours the corrupted records (the failure of JSD)
    scores = np.where(bad, 0.6, 0.1)
    ntok = np.full(300, 20)
    out = {}
    for nf in ("none", "drop", "demote"):
        p = _params(noise_filter=nf, concept_filter=False, allocation="mass")
        res = allocate_and_fill(p, pool, labels, scores, ntok, 60, flags)[0]
        out[nf] = res.selected
        assert len(res.selected) == 60
    assert sum(bad[out["none"]]) == 30  # all corrupted first
    assert sum(bad[out["drop"]]) == 0 and sum(bad[out["demote"]]) == 0
    # drop: nothing flagged is a candidate, even when the budget exceeds the rest
    p = _params(noise_filter="drop", concept_filter=False)
    big = allocate_and_fill(p, pool, labels, scores, ntok, 290, flags)[0]
    assert len(big.selected) == 270 and not bad[big.selected].any()
    p = _params(noise_filter="demote", concept_filter=False)
    big = allocate_and_fill(p, pool, labels, scores, ntok, 290, flags)[0]
    assert len(big.selected) == 290 and bad[big.selected].sum() == 20


# -- profiles --------------------------------------------------------------------


def test_mode_profiles():
    f = _params()
    assert (f.mode, f.allocation, f.degradation, f.noise_filter, f.embed) == (
        "faithful",
        "cds",
        "jsd",
        "none",
        "instruction",
    )
    c = _params(mode="carp")
    assert (c.allocation, c.degradation, c.noise_filter) == (
        "mass",
        "loss_increase",
        "drop",
    )
    # an explicit option wins over the profile (an ablation of carp's set)
    assert (f.coverage, f.within) == (0.0, "ies")
    a = _params(mode="carp", allocation="cds", embed="record")
    assert (a.allocation, a.degradation, a.embed) == ("cds", "loss_increase", "record")
    with pytest.raises(ValueError, match="mode"):
        _params(mode="best")
