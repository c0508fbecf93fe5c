"""Pure schedules: lr warmup/decay, and the global-batch split across ranks."""

from __future__ import annotations

import math

import pytest

from stages.common.train.schedule import (
    global_batch,
    lr_factor,
    rank_micro_batches,
    total_steps,
)


def test_lr_factor_warms_up_then_decays_to_zero():
    f = [lr_factor(s, 10, 2, "cosine") for s in range(10)]
    assert f[0] == 0.5 and f[1] == 1.0 and f[2] == 1.0
    assert all(a >= b for a, b in zip(f[2:], f[3:], strict=False))
    assert lr_factor(10, 10, 2, "linear") == 0.0
    assert lr_factor(6, 10, 2, "linear") == pytest.approx(0.5)
    assert lr_factor(6, 10, 2, "cosine") == pytest.approx(
        0.5 * (1 + math.cos(math.pi * 0.5))
    )
    assert lr_factor(9, 10, 0, "constant") == 1.0
    with pytest.raises(ValueError, match="schedule"):
        lr_factor(5, 10, 0, "step")


def test_total_steps():
    assert total_steps(96, 8, 1.0, None) == 12
    assert total_steps(96, 8, 2.5, None) == 30
    assert total_steps(96, 8, 1.0, 7) == 7
    with pytest.raises(ValueError, match="empty"):
        total_steps(0, 8, 1.0, None)


def test_every_example_once_per_epoch():
    seen = [i for s in range(5) for i in global_batch(40, s, 8, seed=0)]
    assert sorted(seen) == list(range(40))
    assert seen != list(range(40))  # shuffled
    assert global_batch(40, 5, 8, 0) != global_batch(40, 0, 8, 0)  # next epoch
    assert global_batch(40, 3, 8, 1) != global_batch(40, 3, 8, 0)  # other seed


def test_ranks_split_the_global_batch_like_accumulation():
    idx = global_batch(100, 2, 16, seed=0)
    one = rank_micro_batches(idx, 4, 4, rank=0)  # 1 process, accumulation 4
    two = rank_micro_batches(idx, 4, 2, 0) + rank_micro_batches(idx, 4, 2, 1)
    assert one == two  # same micro-batches, so the same averaged gradient
    assert sum(len(m) for m in one) == 16
