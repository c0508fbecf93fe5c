"""Tiny Llama checkpoint and calibration dataset, built once per session for
the prune tests (builders in prune_helpers.py)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from prune_helpers import char_tokenizer, records, tiny_llama

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    import torch

    from stages.common.io import save_model

    torch.set_num_threads(1)
    d = tmp_path_factory.mktemp("base")
    save_model(tiny_llama(), char_tokenizer(), d)
    return d


@pytest.fixture(scope="session")
def calib_dir(tmp_path_factory) -> Path:
    from stages.common.io import write_dataset

    d = tmp_path_factory.mktemp("world")
    write_dataset(records(), d, source="test")
    return d
