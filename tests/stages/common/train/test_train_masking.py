"""Gradient masks alone keep pruned weights at exactly zero through AdamW with
weight decay, gradient accumulation and clipping (no re-zeroing per step)."""

from __future__ import annotations

import pytest

from stages.common.train.params import TrainParams


class _P(TrainParams):
    method: str = "x"


def test_grad_masks_hold_zeros_through_adamw():
    import torch

    from stages.common.train.masking import check_masks
    from stages.common.train.torch_backend import TorchBackend

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Linear(12, 16), torch.nn.GELU(), torch.nn.Linear(16, 4)
    )
    masks = {
        n: torch.rand_like(p) > 0.5 for n, p in model.named_parameters() if p.ndim == 2
    }
    check_masks(model, masks)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = _P(lr=1e-2, weight_decay=0.1, grad_accum=2, max_grad_norm=0.5)
    be = TorchBackend(model, cfg, total=20, masks=masks, device="cpu")
    for _ in range(20):
        for _ in range(2):
            x = torch.randn(8, 12)
            be.backward(model(x).pow(2).mean())
        assert be.step() > 0
    named = dict(model.named_parameters())
    for n, keep in masks.items():
        w = named[n].detach()
        assert (w[~keep] == 0).all(), n  # exact zeros, never re-written
        assert (w[keep] != before[n][keep]).all(), n
        state = be.opt.state[named[n]]
        assert (state["exp_avg"][~keep] == 0).all()  # moments never saw a gradient


def test_check_masks_names_the_bad_entry():
    import torch

    from stages.common.train.masking import check_masks

    model = torch.nn.Linear(3, 2)
    with pytest.raises(ValueError, match="'nope'"):
        check_masks(model, {"nope": torch.ones(2, 3, dtype=torch.bool)})
    with pytest.raises(ValueError, match="shape"):
        check_masks(model, {"weight": torch.ones(3, 2, dtype=torch.bool)})
