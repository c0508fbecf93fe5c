import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """``dense`` teacher, its 50% magnitude-pruned copy ``sparse`` and ``data``."""
    import torch

    from tests.tiny import pruned_pair

    torch.set_num_threads(1)
    return pruned_pair(tmp_path_factory.mktemp("recover-world"))
