"""Selection-study statistics: variant names, the seed-and-record paired
bootstrap against the baseline, random's corrupted-record range."""

from __future__ import annotations

import numpy as np
import pytest

from stages.select.study import (
    paired_difference,
    parse_variant,
    random_corrupted_range,
)


def test_parse_variant():
    v = parse_variant("rec_paser@carp-0.1-s2")
    assert (v.method, v.budget, v.seed) == ("rec_paser@carp", 0.1, 2)
    v = parse_variant("rec_random@0.2-s0")
    assert (v.method, v.budget, v.seed) == ("rec_random", 0.2, 0)
    v = parse_variant("base")
    assert (v.name, v.method, v.budget, v.seed, v.stage, v.labels) == (
        "base",
        "base",
        None,
        None,
        "base",
        (),
    )
    # world seed and regime stay labels; only the last s<int> is the seed
    v = parse_variant("rec_paser@s1-2_4-0.05-s0")
    assert (v.stage, v.labels, v.budget, v.seed) == (
        "rec_paser",
        ("s1", "2_4"),
        0.05,
        0,
    )
    assert v.method == "rec_paser@s1-2_4"
    # "2_4" (the 2:4 pattern's label) is no budget, though float() reads it
    v = parse_variant("rec_full@s1-2_4")
    assert (v.labels, v.budget, v.seed) == (("s1", "2_4"), None, None)


def test_paired_difference_known_gain_and_null():
    rng = np.random.default_rng(0)
    fams = np.repeat(["a", "b"], 200)
    base = {s: (rng.random(400) < 0.5).astype(float) for s in range(3)}
    # family a: +0.2 on every seed (records flipped 0 -> 1), family b unchanged
    gain = {}
    for s, y in base.items():
        x = y.copy()
        zeros = np.flatnonzero((y == 0) & (fams == "a"))[:40]
        x[zeros] = 1.0
        gain[s] = x
    out = paired_difference(gain, base, fams, n_boot=500)
    assert out["a"][0] == pytest.approx(0.2) and out["b"] == (0.0, 0.0, 0.0)
    assert out["mean"][0] == pytest.approx(0.1)
    assert 0 < out["mean"][1] < 0.1 < out["mean"][2]
    # the same model against itself: zero, interval [0, 0]
    same = paired_difference(base, base, fams, n_boot=100)
    assert same["mean"] == (0.0, 0.0, 0.0)
    # seed-to-seed disagreement widens the interval
    noisy = {0: gain[0], 1: base[1], 2: base[2]}
    wide = paired_difference(noisy, base, fams, n_boot=500)
    assert wide["mean"][1] <= 0.0 < wide["mean"][2]
    with pytest.raises(ValueError, match="no seed"):
        paired_difference({5: base[0]}, base, fams)


def test_random_corrupted_range():
    mean, lo, hi = random_corrupted_range(3000, 300, 300)
    assert mean == pytest.approx(30.0) and lo < 30 < hi
    assert 18 <= lo <= 21 and 39 <= hi <= 42
