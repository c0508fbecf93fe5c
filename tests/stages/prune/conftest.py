"""Tiny Llama checkpoint and calibration dataset, built once per session for
the prune tests (builders in tests/tiny.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch

    from tests.tiny import WIDE_INIT_STD, char_tokenizer, tiny_llama, write_checkpoint

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("base")
    return write_checkpoint(tiny_llama(init_std=WIDE_INIT_STD), char_tokenizer(), d)


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    from stages.common.io import write_dataset
    from tests.tiny import records

    d = tmp_path_factory.mktemp("world")
    write_dataset(records(200), d, source="test")
    return d
