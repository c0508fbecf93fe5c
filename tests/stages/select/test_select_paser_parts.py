"""PASER building blocks against the paper's definitions: allocation
arithmetic, greedy fill, concept-consistency rule, JSD, clustering, cache."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from stages.select.budget import allocate
from stages.select.cache import ScoreCache
from stages.select.cluster import cluster, elbow
from stages.select.concepts import ConceptGraph, extract_concepts
from stages.select.greedy import fill
from stages.select.kernels import ies, jsd, response_jsd, response_nll
from stages.select.scoring import length_batches

torch.set_num_threads(1)


# -- allocation --------------------------------------------------------------


def test_allocate_proportional_floor_then_remainder():
    # 10 * (0.5, 0.3, 0.2) = 5, 3, 2 exactly
    assert allocate(10, [0.5, 0.3, 0.2], [100, 100, 100]) == [5, 3, 2]
    # 10 * (1/3 each): floors 3,3,3, the last unit to the first (tie -> index)
    assert allocate(10, [1, 1, 1], [100, 100, 100]) == [4, 3, 3]
    # 7 * (0.6, 0.4) = 4.2, 2.8 -> 4, 2, remainder 1 goes to the larger weight
    assert allocate(7, [0.6, 0.4], [50, 50]) == [5, 2]


def test_allocate_caps_and_redistributes():
    # cluster 0 wants 80 but holds 10; its 70 flow to the others by weight
    out = allocate(100, [0.8, 0.1, 0.1], [10, 500, 500])
    assert out[0] == 10 and sum(out) == 100 and out[1] == out[2] == 45
    # budget larger than the pool: everything, nothing more
    assert allocate(1000, [1, 2, 3], [5, 6, 7]) == [5, 6, 7]
    # zero total weight falls back to uniform
    assert allocate(9, [0, 0, 0], [10, 10, 10]) == [3, 3, 3]
    # a zero-weight cluster only gets budget once the others are full
    assert allocate(12, [1, 0], [10, 10]) == [10, 2]


@pytest.mark.parametrize("seed", range(20))
def test_allocate_invariants_random(seed):
    rng = np.random.default_rng(seed)
    k = int(rng.integers(1, 12))
    w = rng.random(k) * (rng.random(k) > 0.2)
    sizes = rng.integers(0, 60, k).tolist()
    b = int(rng.integers(1, 400))
    out = allocate(b, w.tolist(), sizes)
    assert sum(out) == min(b, sum(sizes))
    assert all(0 <= o <= s for o, s in zip(out, sizes, strict=True))
    if sum(sizes) >= b and w.sum() > 0:
        # before caps bind, nobody falls below its floor share
        for o, wi, s in zip(out, w, sizes, strict=True):
            assert o >= min(s, math.floor(b * wi / w.sum()))


def test_fill_skips_rejections_and_moves_budget():
    ranked = [[0, 1, 2], [10, 11, 12, 13, 14], [20, 21]]
    # cluster 0 (highest weight) gets 3 but item 1 is rejected -> exhausted with 2
    res = fill(ranked, [3, 1, 1], [0.5, 0.3, 0.2], accept=lambda i: i != 1)
    assert res.taken[0] == 2 and res.rejected == [1, 0, 0]
    assert len(res.selected) == 5 and len(set(res.selected)) == 5
    assert 1 not in res.selected
    # the freed unit went to a cluster with candidates left, by weight
    assert res.taken[1] == 2 and res.quota == [2, 2, 1]
    # scan order is decreasing weight; within a cluster the ranking order
    assert res.selected[:2] == [0, 2]
    # everything rejected: budget is not met and nothing breaks
    none = fill(ranked, [2, 2, 2], [1, 1, 1], accept=lambda i: False)
    assert none.selected == [] and sum(none.rejected) == 10


# -- concept filter ----------------------------------------------------------


def test_concept_graph_rule():
    g = ConceptGraph()
    assert g.conflict({"apple", "banana"}) is None  # empty graph accepts
    g.add({"apple", "banana"})
    g.add({"cherry"})
    assert g.conflict({"apple", "banana", "durian"}) is None  # co-occurred
    assert g.conflict({"apple", "durian"}) is None  # only one known concept
    assert g.conflict({"apple", "cherry"}) == ("apple", "cherry")  # never together
    assert g.conflict({"banana", "cherry", "eggplant"}) == ("banana", "cherry")
    g.add({"apple", "cherry"})
    assert g.conflict({"apple", "cherry"}) is None
    assert g.conflict({"banana", "cherry"}) is not None  # cliques are per sample
    assert len(g) == 3


def test_extract_concepts_offline_rake():
    c = extract_concepts("Reverse the string 'hello world', then count the vowels.")
    # stop words split the phrases and never are concepts; quotes are not part
    # of a word, an inner apostrophe or hyphen is
    assert sorted(c) == ["count", "hello world", "reverse", "string", "vowels"]
    quoted = extract_concepts("Don't re-use the 'well-known' key")
    assert sorted(quoted) == ["don't re-use", "key", "well-known"]
    # numbers are instance values, not concepts
    assert extract_concepts("Add 12 and 30.") == ["add"]
    assert extract_concepts("x", max_concepts=3) == []
    long = extract_concepts("alpha beta gamma delta epsilon zeta", max_concepts=1)
    assert len(long) == 1


# -- JSD and losses ----------------------------------------------------------


def _kl(a, b):
    return sum(ai * math.log(ai / bi) for ai, bi in zip(a, b, strict=True) if ai > 0)


def _direct_jsd(p, q):
    """The textbook formula in plain Python floats, 0·log 0 = 0."""
    m = [0.5 * (pi + qi) for pi, qi in zip(p, q, strict=True)]
    return 0.5 * _kl(p, m) + 0.5 * _kl(q, m)


@pytest.mark.parametrize(
    "p,q",
    [
        ([0.5, 0.5, 0.0], [0.0, 0.5, 0.5]),
        ([1.0, 0.0, 0.0], [0.0, 0.0, 1.0]),  # disjoint supports: ln 2
        ([0.2, 0.3, 0.5], [0.2, 0.3, 0.5]),  # identical: 0
        ([0.7, 0.2, 0.1], [0.1, 0.1, 0.8]),
        ([1e-30, 1 - 1e-30, 0.0], [0.5, 0.25, 0.25]),
    ],
)
def test_jsd_matches_direct_formula(p, q):
    tp = torch.tensor(p, dtype=torch.float64)
    tq = torch.tensor(q, dtype=torch.float64)
    got = jsd(tp.log(), tq.log()).item()
    assert math.isfinite(got)
    assert got == pytest.approx(_direct_jsd(p, q), abs=1e-12)
    assert jsd(tq.log(), tp.log()).item() == pytest.approx(got, abs=1e-12)
    assert 0.0 <= got <= math.log(2) + 1e-12


def test_response_jsd_averages_response_tokens_only():
    torch.manual_seed(0)
    b, t, v = 3, 6, 11
    lo, lp = torch.randn(b, t, v), torch.randn(b, t, v)
    labels = torch.full((b, t), -100)
    labels[0, 3:] = 1  # response = tokens 3..5, predicted at positions 2..4
    labels[1, 5] = 1
    labels[2, 1:4] = 1
    got = response_jsd(lo, lp, labels)
    sm = lambda z: z.double().softmax(-1).tolist()  # noqa: E731
    for i in range(b):
        pos = [s for s in range(t - 1) if labels[i, s + 1] != -100]
        want = np.mean([_direct_jsd(sm(lo[i, s]), sm(lp[i, s])) for s in pos])
        assert got[i].item() == pytest.approx(want, rel=1e-5)
    # the prompt does not matter: changing prompt-position logits changes nothing
    lp2 = lp.clone()
    lp2[0, :2] += 5
    assert torch.allclose(response_jsd(lo, lp2, labels), got)
    assert torch.allclose(response_jsd(lo, lo, labels), torch.zeros(b), atol=1e-6)


def test_response_nll_and_ies():
    logits = torch.zeros(1, 4, 5)  # uniform: NLL = ln 5 at every position
    labels = torch.tensor([[-100, -100, 2, 3]])
    assert response_nll(logits, labels).item() == pytest.approx(math.log(5))
    s = ies([0.2, 0.2], [10, 100])
    assert s[0] == pytest.approx(0.2 / math.log(100)) and s[0] > s[1]


# -- clustering --------------------------------------------------------------


def _blobs(k, n_per, noise, seed=0, dim=48):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    sizes = rng.integers(n_per // 2, n_per * 2, k)
    parts = [c + noise * rng.normal(size=(int(s), dim)) for c, s in zip(centers, sizes)]  # noqa: B905
    x = np.vstack(parts)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), sizes)


@pytest.mark.parametrize("k", [2, 3, 6])
def test_clustering_recovers_separated_clusters(k):
    from sklearn.metrics import adjusted_rand_score

    x, y = _blobs(k, 150, 0.3, seed=k)
    auto = cluster(x, None, (2, 10), seed=0)
    assert auto.k == k and "eigengap" in auto.k_rule
    assert adjusted_rand_score(y, auto.labels) > 0.95
    declared = cluster(x, k, seed=0)
    assert adjusted_rand_score(y, declared.labels) > 0.95
    again = cluster(x, None, (2, 10), seed=0)
    assert np.array_equal(again.labels, auto.labels)  # deterministic
    assert auto.coords.shape[0] == len(x) and np.all(np.isfinite(auto.coords))


def test_many_components_distinct_coordinates_and_k():
    """More kNN-graph components than diffusion coordinates (a templated pool at
    200k): each of the largest components, the largest one included, gets its
    own non-zero coordinates; an all-zero spectrum gives the largest K."""
    from scipy.sparse.csgraph import connected_components

    from stages.select.cluster import affinity, diffusion_map, eigengap, knn

    x, _ = _blobs(25, 30, 0.02, seed=1)
    a, _ = affinity(*knn(x, 5))
    c, comp = connected_components(a, directed=False)
    assert c >= 12
    coords, lam = diffusion_map(a, 10)
    assert np.allclose(lam, 0.0, atol=1e-9) and np.all(np.isfinite(coords))
    big = np.argsort(-np.bincount(comp), kind="stable")[:11]
    means = np.array([coords[comp == cc].mean(0) for cc in big])
    for cc, m in zip(big, means, strict=True):
        assert np.allclose(coords[comp == cc], m, atol=1e-6)  # one point each
    gaps = np.linalg.norm(means[:, None] - means[None], axis=-1)
    assert np.linalg.norm(means, axis=1).min() > 1e-3
    assert gaps[np.triu_indices(len(big), 1)].min() > 1e-3
    assert eigengap(lam, (2, 8))[0] == 8  # no gap information: the top of the range
    assert eigengap(np.r_[0.0, 0.0, 0.3, 0.31], (2, 5))[0] == 3  # 3 components


def test_elbow_rule():
    assert elbow([2, 3, 4, 5, 6, 7], [1.0, 0.6, 0.2, 0.18, 0.16, 0.15]) == 4
    assert elbow([2, 3], [1.0, 0.5]) == 3


# -- cache and batching -------------------------------------------------------


def test_score_cache_roundtrip(tmp_path):
    c = ScoreCache(tmp_path / "c", 2)
    c.add(["a", "b"], np.array([[1, 2], [3, 4]]))
    again = ScoreCache(tmp_path / "c", None)
    vals, missing = again.lookup(["b", "x", "a"])
    assert missing == [1] and again.dim == 2
    assert vals[0].tolist() == [3, 4] and vals[2].tolist() == [1, 2]
    assert np.isnan(vals[1]).all()


def test_length_batches_respect_limits():
    lengths = [5, 50, 7, 49, 6, 48, 100]
    bs = length_batches(lengths, max_tokens=120, max_batch=3)
    assert sorted(i for b in bs for i in b) == list(range(7))
    for b in bs:
        width = max(lengths[i] for i in b)
        assert len(b) <= 3 and (len(b) == 1 or len(b) * width <= 120)
    assert bs[0] == [6]  # the longest alone (100 * 2 > 120)
