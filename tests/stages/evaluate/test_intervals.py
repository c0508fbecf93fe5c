"""Intervals: nominal coverage on synthetic data; paired differences on
hand-made predictions (no model needed)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stages.evaluate.compare import compare, em_difference
from stages.evaluate.intervals import (
    ratio_bootstrap,
    significant,
    stratified_bootstrap,
    wilson,
)


def test_wilson_matches_the_closed_form_and_covers_at_the_nominal_rate():
    k, n, z = 45, 50, 1.959963984540054
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    assert wilson(k, n) == pytest.approx((centre - half, centre + half), abs=1e-9)
    assert wilson(0, 50)[0] == 0.0 and wilson(50, 50)[1] == 1.0
    from scipy.stats import binom

    bounds = [wilson(k, n) for k in range(n + 1)]
    for true_p in (0.5, 0.8, 0.9, 0.95):  # exact coverage: sum of P(k) over hits
        cover = sum(
            binom.pmf(k, n, true_p)
            for k, (lo, hi) in enumerate(bounds)
            if lo <= true_p <= hi
        )
        assert 0.92 <= cover <= 0.98, (true_p, cover)


def test_family_stratified_bootstrap_of_the_mean_covers_at_about_the_nominal_rate():
    rng = np.random.default_rng(1)
    ps = np.array([0.95, 0.9, 0.85, 0.7, 0.6, 0.98, 0.8, 0.75, 0.9])  # 9 families
    sizes = [50, 40, 60, 50, 30, 50, 50, 45, 55]
    truth, hits, trials = ps.mean(), 0, 200
    for t in range(trials):
        strata = [rng.random(n) < p for p, n in zip(ps, sizes, strict=True)]
        lo, hi = stratified_bootstrap(strata, seed=t, n_resamples=1000)
        hits += lo <= truth <= hi
    assert 0.89 <= hits / trials <= 0.99, hits / trials
    # seeded: the same data and seed give the same bounds
    strata = [rng.random(50) < 0.8 for _ in range(3)]
    assert stratified_bootstrap(strata, seed=7) == stratified_bootstrap(strata, seed=7)


def test_answer_perplexity_bootstrap_covers_the_population_value():
    rng = np.random.default_rng(2)
    tokens = rng.integers(2, 6, size=20000)
    nll = tokens * rng.gamma(2.0, 0.05, size=tokens.size)  # per-record sums
    truth = np.exp(nll.sum() / tokens.sum())
    hits = 0
    for t in range(100):
        idx = rng.choice(tokens.size, size=200, replace=False)
        lo, hi = ratio_bootstrap([nll[idx]], [tokens[idx]], seed=t, n_resamples=500)
        hits += lo <= truth <= hi
    assert 0.88 <= hits / 100 <= 1.0


def _hits(values: dict[str, list[int]]) -> dict[str, dict[str, float]]:
    return {
        f: {f"{f}{i}": float(v) for i, v in enumerate(vs)} for f, vs in values.items()
    }


def test_paired_difference_on_hand_made_predictions():
    a = _hits({"add": [1] * 30 + [0] * 20, "sort": [1] * 40 + [0] * 10})
    # b fixes 15 of add's misses and breaks nothing: a clear paired gain
    b = _hits({"add": [1] * 45 + [0] * 5, "sort": [1] * 40 + [0] * 10})
    d = em_difference(a, b, seed=[0])
    assert d["em/add"] == pytest.approx(0.3) and d["em/sort"] == 0.0
    assert d["em/mean"] == pytest.approx(0.15)
    assert significant(d["em/add_lo"], d["em/add_hi"])
    assert d["em/sort_lo"] == d["em/sort_hi"] == 0.0  # identical answers
    assert significant(d["em/mean_lo"], d["em/mean_hi"])
    # c fixes 3 records and breaks 3 others: the same accuracy, a zero difference
    c = _hits({"add": [0, 0, 0] + [1] * 27 + [1, 1, 1] + [0] * 17, "sort": [1] * 50})
    d = em_difference(a, c, seed=[0])
    assert d["em/add"] == 0.0 and not significant(d["em/add_lo"], d["em/add_hi"])
    # pairing removes the shared difficulty: narrower than independent samples
    paired = d["em/add_hi"] - d["em/add_lo"]
    sa, sc = list(a["add"].values()), list(c["add"].values())
    boot = np.random.default_rng(0).integers(0, 50, size=(2000, 2, 50))
    unpaired = np.take(sc, boot[:, 1]).mean(1) - np.take(sa, boot[:, 0]).mean(1)
    assert paired < np.subtract(*np.quantile(unpaired, [0.975, 0.025]))


def test_compare_reads_prediction_files_and_names_pairs_later_minus_earlier(
    tmp_path: Path,
):
    preds = {"base": [1, 1, 1, 1, 0, 1], "prune": [0, 1, 0, 1, 0, 0]}
    (tmp_path / "predictions").mkdir()
    results = {}
    for m, hits in preds.items():
        rows = [
            {"id": i, "family": "add" if i < 3 else "sort", "em": float(h)}
            for i, h in enumerate(hits)
        ]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (tmp_path / "predictions" / f"{m}.jsonl").write_text(text)
        results[m] = {"em/add": sum(hits[:3]) / 3, "em/sort": sum(hits[3:]) / 3}
    diffs = compare(tmp_path, ["base", "prune"], results, seed=0)
    assert list(diffs) == ["prune-vs-base"]
    d = diffs["prune-vs-base"]
    assert d["em/add"] == pytest.approx(-2 / 3) and d["em/sort"] == pytest.approx(
        -1 / 3
    )
    assert d["em/mean"] == pytest.approx(-0.5)
    assert results["base"]["em/add_lo"] == pytest.approx(wilson(3, 3)[0])
    assert diffs == compare(tmp_path, ["base", "prune"], results, seed=0)  # seeded
    # a third model: all pairs, or each against the first only (same values)
    (tmp_path / "predictions" / "rec.jsonl").write_text(
        (tmp_path / "predictions" / "base.jsonl").read_text()
    )
    results["rec"] = dict(results["base"])
    names = ["base", "prune", "rec"]
    every = compare(tmp_path, names, results, seed=0)
    first = compare(tmp_path, names, results, seed=0, against_first=True)
    assert set(every) == {"prune-vs-base", "rec-vs-base", "rec-vs-prune"}
    assert set(first) == {"prune-vs-base", "rec-vs-base"}
    assert first["rec-vs-base"] == every["rec-vs-base"]
    assert first["rec-vs-base"]["em/mean"] == 0.0


def test_em_on_seen_and_unseen_problems_from_world_flags(tmp_path: Path):
    from stages.evaluate.exact_match import seen_em, seen_flags

    world = {"families": {"add": {"closed": True}, "sort": {"closed": False}}}
    (tmp_path / "world.json").write_text(json.dumps(world))
    recs = [
        {"family": "add"},  # closed: trained on, reworded
        {"family": "add", "seen": False},  # held out by unseen_fraction
        {"family": "sort"},  # open: never trained on
        {"family": "other"},  # unknown to world.json
    ]
    flags = seen_flags(tmp_path, recs)
    assert flags == [True, False, False, None]
    assert seen_em([1.0, 0.0, 1.0, 1.0], flags) == {"em_seen": 1.0, "em_unseen": 0.5}
    (tmp_path / "predictions").mkdir()
    results = {}
    for m, hits in {"a": [1, 1, 0, 0], "b": [1, 0, 1, 1]}.items():
        rows = [
            {"id": i, "family": r["family"], "em": float(h), "seen": s}
            for i, (r, h, s) in enumerate(zip(recs, hits, flags, strict=True))
        ]
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (tmp_path / "predictions" / f"{m}.jsonl").write_text(text)
        results[m] = seen_em([float(h) for h in hits], flags)
    d = compare(tmp_path, ["a", "b"], results, seed=0)["b-vs-a"]
    assert results["a"]["em_unseen_lo"] == pytest.approx(wilson(1, 2)[0])
    assert d["em_seen"] == 0.0 and d["em_unseen"] == pytest.approx(0.0)
    assert d["em_unseen_lo"] < 0 < d["em_unseen_hi"]  # one fixed, one broken


def test_mcnemar_mid_p_on_hand_made_pairs():
    from stages.evaluate.intervals import mcnemar_midp
    from stages.evaluate.report import cell

    # b breaks 5 records a got right, fixes none: exact p = 2 / 2**5, mid-p half
    a, b = [1] * 5 + [1, 0] * 5, [0] * 5 + [1, 0] * 5
    assert mcnemar_midp(a, b) == pytest.approx(2 / 32 - 1 / 32)
    assert mcnemar_midp(b, a) == mcnemar_midp(a, b)
    assert mcnemar_midp([1, 0, 1, 0], [0, 1, 0, 1]) == 1.0  # 2 fixed, 2 broken
    assert mcnemar_midp([1, 1], [1, 1]) == 1.0  # nothing discordant
    # 1 vs 9 discordant: 2 * P(X <= 1) - P(X = 1) for X ~ Bin(10, 1/2)
    a, b = [1] + [0] * 9, [0] + [1] * 9
    assert mcnemar_midp(a, b) == pytest.approx((2 * (1 + 10) - 10) / 1024)
    d = em_difference(_hits({"add": a}), _hits({"add": b}), seed=[0])
    assert d["em/add_p"] == pytest.approx(12 / 1024)
    from stages.evaluate.report import families_of

    assert families_of({"b-vs-a": d}) == ["add"]  # a p-value is not a family
    # the table marks by p under mcnemar, by the interval otherwise
    res = {"x": 0.1, "x_lo": -0.02, "x_hi": 0.2, "x_p": 0.01}
    assert cell(res, "x", ".3f", signed=True).endswith("n.s.")
    got = cell(res, "x", ".3f", signed=True, test="mcnemar")
    assert got == "+0.100 [-0.02, +0.20] p=0.01"
