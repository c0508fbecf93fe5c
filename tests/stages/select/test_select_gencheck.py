"""The generation check's pure parts: per-cluster sampling, EM drop per
cluster, and record scores rescaled to the clusters' drops."""

from __future__ import annotations

import numpy as np
import pytest

from stages.select.gencheck import cluster_damage, sample_per_cluster, scale_to_clusters


def test_sample_per_cluster_caps_each_cluster_and_is_seeded():
    labels = np.array([0] * 10 + [1] * 3 + [2] * 7)
    idx = sample_per_cluster(labels, 4, seed=0)
    assert np.bincount(labels[idx]).tolist() == [4, 3, 4]  # cluster 1 whole
    assert len(set(idx.tolist())) == len(idx) and np.all(np.diff(idx) > 0)
    assert np.array_equal(idx, sample_per_cluster(labels, 4, seed=0))
    draws = {tuple(sample_per_cluster(labels, 4, seed=s)) for s in range(5)}
    assert len(draws) > 1


def test_cluster_damage_is_em_original_minus_em_pruned():
    hits = np.array([[1, 0], [1, 1], [0, 0], [1, 0], [0, 1]], dtype=float)
    labels = np.array([0, 0, 0, 1, 1])
    drop = cluster_damage(hits, labels, 3)
    assert drop[0] == pytest.approx(2 / 3 - 1 / 3) and drop[1] == 0.0
    assert np.isnan(drop[2])  # nothing sampled there


def test_scale_to_clusters_keeps_order_and_sets_cluster_means():
    s = np.array([1.0, 3.0, 2.0, 0.0, 0.0, 5.0, 1.0])
    labels = np.array([0, 0, 0, 1, 1, 2, 2])
    out = scale_to_clusters(s, labels, np.array([0.5, 0.2, -0.3]))
    assert out[labels == 0].mean() == pytest.approx(0.5)
    assert np.argsort(out[:3]).tolist() == np.argsort(s[:3]).tolist()
    assert out[3:5].tolist() == [0.2, 0.2]  # no record damage: the cluster's drop
    assert out[5:].tolist() == [0.0, 0.0]  # a negative drop counts as none
