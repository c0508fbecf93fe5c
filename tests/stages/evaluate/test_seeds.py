"""Across seeds: groups of seed variants, mean ± std and the t-interval of the
mean against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest

from stages.evaluate.seeds import seed_groups, seed_summary, seed_table, t_interval


def test_seed_variants_group_by_everything_but_the_seed_label():
    models = ["base", "recover@a-0.1-s0", "recover@a-0.1-s1", "recover@b-s0"]
    models += ["recover@b-s2", "recover@s0", "recover@s1", "solo-s3"]
    assert seed_groups(models) == {
        "recover@a-0.1": ["recover@a-0.1-s0", "recover@a-0.1-s1"],
        "recover@b": ["recover@b-s0", "recover@b-s2"],
        "recover": ["recover@s0", "recover@s1"],
    }  # one-member groups (solo-s3) and unswept models get no row


def test_mean_std_and_t_interval_match_a_direct_computation():
    em = [0.90, 0.86, 0.93]
    results = {f"r@s{i}": {"em/mean": v, "ppl": 2.0 + i} for i, v in enumerate(em)}
    results["base"] = {"em/mean": 0.5}
    row = seed_summary(results, list(results))["r"]
    sd = float(np.std(em, ddof=1))
    half = 4.302652729911275 * sd / math.sqrt(3)  # t_{0.975, 2}
    assert row["seeds"] == 3
    assert row["em/mean"] == pytest.approx(np.mean(em))
    assert row["em/mean_std"] == pytest.approx(sd)
    assert (row["em/mean_lo"], row["em/mean_hi"]) == pytest.approx(
        (np.mean(em) - half, np.mean(em) + half)
    )
    assert t_interval([1.0, 1.0]) == (1.0, 1.0)
    table = seed_table({"r": row})
    assert "| | seeds | mean EM | ppl |" in table
    assert (
        "| r | 3 | 0.897 ± 0.035 [0.809, 0.984] | 3.000 ± 1.000 [0.516, 5.484] |"
        in table
    )
