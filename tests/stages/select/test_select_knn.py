"""kNN graph backends of PASER's clustering: the approximate search
(nearest-neighbour descent) against the exact one, self-exclusion, recall
estimate, `auto` switch and determinism."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stages.select.cluster import (
    KNN_AUTO_EXACT_MAX,
    _drop_self,
    cluster,
    knn,
    knn_backend,
    knn_nndescent,
    knn_recall,
)

torch.set_num_threads(1)


def _blobs(k: int, n_per: int, noise: float, seed: int, dim: int = 24):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(k, dim))
    x = np.repeat(centers, n_per, 0) + noise * rng.normal(size=(k * n_per, dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32), np.repeat(np.arange(k), n_per)


@pytest.fixture(scope="module")
def graphs():
    """One exact and two approximate graphs of the same points (pynndescent
    compiles its kernels on first use: ~30 s, paid once here)."""
    x, y = _blobs(5, 300, 0.6, seed=3)
    exact = knn(x, 10)
    return x, y, exact, knn_nndescent(x, 10, seed=0), knn_nndescent(x, 10, seed=0)


def test_nndescent_finds_the_true_neighbours(graphs):
    x, _, (ei, ed), (ai, ad), _ = graphs
    assert ai.shape == ei.shape == (len(x), 10) and ai.dtype == np.int64
    assert not (ai == np.arange(len(x))[:, None]).any()  # self excluded
    assert np.all(np.diff(ad, axis=1) >= -1e-6)  # nearest first
    # distances are true Euclidean distances of the listed pairs
    np.testing.assert_allclose(
        ad, np.linalg.norm(x[:, None, :] - x[ai], axis=2), rtol=1e-4, atol=1e-4
    )
    # recall against the exact graph, and the sampled estimate agrees with it
    full = np.mean([len(np.intersect1d(a, e)) / 10 for a, e in zip(ai, ei)])  # noqa: B905
    assert full > 0.9
    assert abs(knn_recall(x, ai, sample=len(x)) - full) < 1e-9
    assert knn_recall(x, ei, sample=200) == 1.0


def test_nndescent_is_deterministic(graphs):
    _, _, _, (ai, ad), (bi, bd) = graphs
    assert np.array_equal(ai, bi) and np.array_equal(ad, bd)


def test_drop_self_with_and_without_the_row_itself():
    ind = np.array([[0, 4, 2], [3, 2, 1], [1, 2, 2]])  # row 1 lacks itself
    dist = np.array([[0.0, 1, 2], [0.5, 0.6, 0.7], [0.0, 0.0, 3]])
    i, d = _drop_self(ind, dist, 2)
    assert i.tolist() == [[4, 2], [3, 2], [1, 2]]
    assert d.tolist() == [[1, 2], [0.5, 0.6], [0.0, 3]]


def test_auto_switches_at_the_threshold_and_names_are_checked():
    assert knn_backend("auto", KNN_AUTO_EXACT_MAX) == "exact"
    assert knn_backend("auto", KNN_AUTO_EXACT_MAX + 1) == "nndescent"
    assert knn_backend("nndescent", 10) == "nndescent"
    with pytest.raises(ValueError, match="knn: unknown backend 'hnsw'"):
        knn_backend("hnsw", 10)


def test_clustering_on_the_approximate_graph(graphs):
    from sklearn.metrics import adjusted_rand_score

    x, y = _blobs(4, 150, 0.3, seed=4)
    ex = cluster(x, None, (2, 10), seed=0)
    ap = cluster(x, None, (2, 10), seed=0, knn_method="nndescent")
    assert ex.knn == {"backend": "exact"}
    assert ap.knn["backend"] == "nndescent" and ap.knn["recall_sample"] > 0.9
    assert ap.k == ex.k == 4
    assert adjusted_rand_score(y, ap.labels) > 0.95
