"""carp's merges equal mergekit's on tiny Llama checkpoints (slow: mergekit
runs from its own environment, created on first use). Deterministic methods
agree tensor by tensor to 1e-6; DARE agrees in distribution (drop rate and
rescale of the task vectors, averaged over seeds)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.stages.merge.common import merge
from tests.stages.merge.mergekit_env import mergekit_config, run_mergekit

pytestmark = pytest.mark.slow

CASES = {
    "linear": ({"normalize": True}, {"weight": [0.2, 0.5, 0.3]}, {}),
    "slerp": ({"t": 0.35}, {}, {}),
    "task_arithmetic": ({"lambda": 0.8}, {"weight": [1.0, 0.5, 0.7]}, {}),
    "ties": (
        {"normalize": True, "lambda": 1.0},
        {"weight": [1.0, 0.6, 0.8], "density": [0.5, 0.3, 0.7]},
        {},
    ),
}


def _sd(p: Path) -> dict[str, torch.Tensor]:
    return load_file(str(p / "model.safetensors"))


def _carp(method, fam, tmp, params, per_model, n):
    names = [f"e{i}" for i in range(n)]
    kw = dict(params)
    for k, vals in per_model.items():
        kw[k] = dict(zip(names, vals, strict=True))
    inputs = {"models": [fam[x] for x in names]}
    if method != "linear" and method != "slerp":
        inputs["base"] = fam["base"]
    merge(method, inputs, tmp / f"carp_{method}", **kw)
    return _sd(tmp / f"carp_{method}")


@pytest.mark.parametrize("method", list(CASES))
def test_equal_to_mergekit(family, tmp_path, method):
    params, per_model, _ = CASES[method]
    n = 2 if method == "slerp" else 3
    models = [family[f"e{i}"] for i in range(n)]
    base = models[0] if method == "slerp" else family["base"]
    if method == "linear":
        base = None
    cfg = mergekit_config(method, models, base, params, per_model)
    mk = _sd(run_mergekit(cfg, tmp_path / f"mk_{method}"))
    ours = _carp(method, family, tmp_path, params, per_model, n)
    assert set(mk) == set(ours)
    worst = max(float((mk[k].float() - ours[k]).abs().max()) for k in mk)
    print(f"{method}: max abs diff vs mergekit {worst:.3g} over {len(mk)} tensors")
    assert worst <= 1e-6


@pytest.mark.parametrize("method", ["dare_linear", "dare_ties"])
def test_dare_in_distribution(family, tmp_path, method):
    """Drop rate and survivor rescale of each tensor's merged task vector
    (single model, so the merged delta is that model's dropped delta)."""
    density = 0.4
    base = _sd(family["base"])
    e0 = _sd(family["e0"])
    name = "model.layers.0.mlp.up_proj.weight"
    delta = e0[name] - base[name]
    stats = {"carp": [], "mergekit": []}
    for seed in range(4):
        cfg = mergekit_config(
            method,
            [family["e0"]],
            family["base"],
            {},
            {"weight": [1.0], "density": [density]},
        )
        mk = _sd(run_mergekit(cfg, tmp_path / f"mk{seed}", seed=seed))
        from stages.merge import METHODS

        out = tmp_path / f"carp{seed}"
        out.mkdir()
        p = METHODS.load(method).Params(models=["e0"], base="base", density=density)
        # one model: run the method directly (a stage needs two or more)
        from stages.merge.job import TensorJob

        job = TensorJob(name, [e0[name]], base[name], [1.0], [density], seed=seed)
        ours = METHODS.load(method).merge_tensor(job, p)
        for who, t in (("mergekit", mk[name]), ("carp", ours)):
            d = t.float() - base[name]
            kept = d != 0
            stats[who].append(
                (float(kept.float().mean()), float((d[kept] / delta[kept]).mean()))
            )
    for who, rows in stats.items():
        rate = sum(r for r, _ in rows) / len(rows)
        scale = sum(s for _, s in rows) / len(rows)
        print(
            f"{method} {who}: kept {rate:.4f} (density {density}), "
            f"survivor scale {scale:.4f} (1/density {1 / density:.4f})"
        )
        assert abs(rate - density) < 0.02
        assert abs(scale - 1 / density) < 0.15
    carp_rate = sum(r for r, _ in stats["carp"]) / 4
    mk_rate = sum(r for r, _ in stats["mergekit"]) / 4
    assert abs(carp_rate - mk_rate) < 0.02
