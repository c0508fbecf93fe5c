"""Re-pruning a sparse model: the old zeros stay zero and count towards the
target (50% -> 60% prunes 10 more points), for every mask method, and
prune -> recover -> prune keeps each step's zeros."""

from __future__ import annotations

import importlib

import pytest
import torch

from pipelines.contract import RunContext
from stages.prune import run
from stages.prune.magnitude import magnitude_masks
from stages.prune.sparsegpt import sparsegpt_prune
from stages.prune.wanda import wanda_mask

torch.set_num_threads(1)


def _sparse(rows=16, cols=64, frac=0.5, seed=0):
    """A weight with ``frac`` of its entries zero at random (not its smallest)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    w[torch.rand(rows, cols, generator=g) < frac] = 0
    return w


def _x(cols=64, tokens=256, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(tokens, cols, generator=g) * torch.rand(cols, generator=g)


@pytest.mark.parametrize("scope", ["layer", "row", "global"])
def test_magnitude_keeps_old_zeros_and_counts_them(scope):
    w = _sparse(frac=0.3)
    keep = magnitude_masks({"w": w}, 0.6, scope, None)["w"]
    assert not keep[w == 0].any()  # zeros stay zero
    if scope == "row":  # each row: max(its zeros, floor(0.6 * 64))
        want = torch.clamp((w == 0).sum(1), min=int(64 * 0.6))
        assert torch.equal((~keep).sum(1), want)
    else:
        assert int((~keep).sum()) == int(w.numel() * 0.6)


def test_wanda_and_sparsegpt_keep_old_zeros():
    w, x = _sparse(frac=0.5), _x()
    sq = x.pow(2).sum(0)
    for nm, s in [(None, 0.6), ((1, 4), 0.75)]:
        keep = wanda_mask(w, sq, s, nm)
        assert not keep[w == 0].any()
        w2, keep2 = sparsegpt_prune(w, 2 * x.T @ x / len(x), s, nm, blocksize=16)
        assert not keep2[w == 0].any() and torch.equal(w2 != 0, keep2)
        if nm:  # at most N of every M kept; groups with more zeros keep them
            assert torch.all(keep2.reshape(16, -1, 4).sum(-1) <= 1)
    # a 2:4 model pruned to 1:4 keeps exactly 1 of its 2 survivors per group
    d = _sparse(frac=0.0)
    w24 = d * magnitude_masks({"w": d}, 0.5, "layer", (2, 4))["w"]
    keep = wanda_mask(w24, sq, 0.75, (1, 4))
    assert not keep[w24 == 0].any()
    assert torch.all(keep.reshape(16, -1, 4).sum(-1) == 1)


def _prune(method, model_dir, calib_dir, out, **kw):
    cls = importlib.import_module(f"stages.prune.{method}").Params
    cal = {} if method == "magnitude" else {"calib": "world", "nsamples": 4}
    params = cls(model="m", seqlen=32, batch_size=4, **cal, **kw)
    out.mkdir()
    inputs = {"model": model_dir, "calib": calib_dir}
    return run(params, inputs, out, RunContext())


def _zeros(folder):
    from stages.common.io import load_model

    return {
        n: p.data == 0
        for n, p in load_model(folder).named_parameters()
        if ".layers." in n and n.endswith("proj.weight")
    }


def test_prune_recover_prune(tiny_model_dir, calib_dir, tmp_path):
    """Gradual schedule: 50% magnitude, a short masked fine-tune, then 60%
    with each mask method; the recovered zeros stay zero in every result."""
    from stages.recover import run as recover
    from stages.recover.full import Params as RecoverParams

    _prune("magnitude", tiny_model_dir, calib_dir, tmp_path / "p1", sparsity=0.5)
    rec = tmp_path / "rec"
    rec.mkdir()
    recover(
        RecoverParams(model="p1", data="d", steps=2, micro_batch=4, lr=1e-3),
        {"model": tmp_path / "p1", "data": calib_dir},
        rec,
        RunContext(),
    )
    old = _zeros(rec)
    assert sum(int(z.sum()) for z in old.values()) / sum(
        z.numel() for z in old.values()
    ) == pytest.approx(0.5)
    for method in ["magnitude", "wanda", "sparsegpt"]:
        out = tmp_path / method
        res = _prune(method, rec, calib_dir, out, sparsity=0.6)
        new = _zeros(out)
        for name, z in old.items():
            assert not (z & ~new[name]).any(), (method, name)
        assert res.metrics["sparsity_before"] == pytest.approx(0.5)
        for name, z in old.items():
            # the count of each group (a row for wanda; the matrix for magnitude
            # and sparsegpt, whose one block spans all <= 128 columns here)
            # includes its old zeros; a group that had more keeps them all
            dims = (1,) if method == "wanda" else (0, 1)
            k = int((z.shape[-1] if dims == (1,) else z.numel()) * 0.6)
            want = torch.clamp(z.sum(dims), min=k)
            assert torch.equal(new[name].sum(dims), want), (method, name)
