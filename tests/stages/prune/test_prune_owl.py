"""OWL layer-wise sparsity (Yin et al. 2024): outlier ratios as the reference
computes them, the global sparsity equals the target, blocks with more outliers
get lower sparsity, for magnitude, Wanda and SparseGPT."""

from __future__ import annotations

import importlib

import pytest
import torch
from pydantic import ValidationError

from pipelines.contract import RunContext
from stages.prune import run
from stages.prune.owl import outlier_ratio, owl_sparsities

torch.set_num_threads(1)


def test_outlier_ratio_is_percentage_above_m_times_mean():
    a = torch.tensor([[1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 13.0]])
    b = torch.ones(2, 2)
    # mean over all 12 entries = 24 / 12 = 2; above 5 * 2 = 10: just the 13
    assert outlier_ratio([a, b], 5.0) == pytest.approx(100 / 12)
    assert outlier_ratio([a, b], 7.0) == 0.0


def test_owl_sparsities_reference_formula_and_global_target():
    ratios, sizes = [1.0, 3.0, 2.0, 6.0], [10, 10, 10, 10]
    got = owl_sparsities(ratios, sizes, 0.5, 0.08)
    # the reference: min-max to [0, 2 lam], minus mean, plus 1 - s; s_i = 1 - that
    scaled = [(r - 1) / 5 * 0.16 for r in ratios]
    mean = sum(scaled) / 4
    want = [1 - (x - mean + 0.5) for x in scaled]
    assert got == pytest.approx(want)
    assert sum(got) / 4 == pytest.approx(0.5)
    assert max(got) - min(got) == pytest.approx(0.16)
    order = sorted(range(4), key=lambda i: ratios[i])
    assert [got[i] for i in order] == sorted(got, reverse=True)  # more outliers, less
    # unequal block sizes: the weighted global sparsity is still the target
    uneven = owl_sparsities(ratios, [10, 30, 20, 40], 0.6, 0.1)
    assert sum(s * n for s, n in zip(uneven, [10, 30, 20, 40], strict=True)) == (
        pytest.approx(0.6 * 100)
    )
    assert owl_sparsities([2.0, 2.0], [1, 1], 0.5, 0.08) == [0.5, 0.5]


@pytest.mark.parametrize(
    "kw, match",
    [
        ({"profile": "owl", "pattern": "2:4"}, "profile"),
        ({"profile": "owl", "sparsity": 0.05}, "owl_lambda"),
        ({"profile": "owl", "owl_lambda": 0.0}, "owl_lambda"),
    ],
)
def test_owl_validation(kw, match):
    from stages.prune.wanda import Params

    with pytest.raises(ValidationError, match=match):
        Params(model="m", calib="w", **kw)


def test_magnitude_owl_needs_calib():
    from stages.prune.magnitude import Params

    with pytest.raises(ValidationError, match="calib"):
        Params(model="m", profile="owl")
    with pytest.raises(ValidationError, match="scope"):
        Params(model="m", calib="w", profile="owl", scope="global")


SLOW = pytest.mark.slow  # the default suite runs OWL end to end with Wanda only


@pytest.mark.parametrize(
    "method",
    [
        pytest.param("magnitude", marks=SLOW),
        "wanda",
        pytest.param("sparsegpt", marks=SLOW),
    ],
)
def test_owl_stage(method, tiny_model_dir, calib_dir, tmp_path):
    """Global sparsity = target; the block with the higher outlier ratio gets
    the lower sparsity; each block's matrices hold its sparsity."""
    cls = importlib.import_module(f"stages.prune.{method}").Params
    params = cls(
        model="m",
        calib="w",
        sparsity=0.5,
        profile="owl",
        owl_lambda=0.1,
        nsamples=8,
        batch_size=4,
    )
    out = tmp_path / method
    out.mkdir()
    res = run(params, {"model": tiny_model_dir, "calib": calib_dir}, out, RunContext())
    man = res.extra_manifest
    ratios, sp = man["owl_outlier_ratio"], man["owl_sparsity"]
    assert man["profile"] == "owl" and ratios[0] != ratios[1]
    hi = max(range(2), key=lambda i: ratios[i])
    assert sp[hi] == pytest.approx(0.4) and sp[1 - hi] == pytest.approx(0.6)
    assert res.metrics[f"sparsity.layer_{hi}"] == pytest.approx(0.4, abs=0.01)
    assert res.metrics[f"sparsity.layer_{1 - hi}"] == pytest.approx(0.6, abs=0.01)
    # = 0.5 up to each row's / matrix's floor(s * n) (64 columns: < 1/64)
    assert res.metrics["sparsity"] == pytest.approx(0.5, abs=1 / 64)
