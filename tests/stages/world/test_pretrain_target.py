"""Slow: the default world + default base model reach the 90% mean-EM target."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.mark.slow
def test_default_base_model_reaches_90_percent_mean_em(tmp_path):
    from pipelines.contract import RunContext
    from stages.world import METHODS, pretrain, run

    world, base = tmp_path / "world", tmp_path / "base"
    world.mkdir()
    base.mkdir()
    run(METHODS.load("synthetic").Params(), {}, world, RunContext())
    params = pretrain.METHODS.load("llama").Params(data="world")
    res = pretrain.run(params, {"data": world}, base, RunContext())
    fams = {k: v for k, v in res.metrics.items() if k.startswith("em/")}
    assert res.metrics["em/mean"] >= 0.90, fams
