import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A briefly pretrained ``dense`` model, its pruned copy ``sparse``, and
    ``forget`` (24 word-reversal records) / ``retain`` (the addition records)
    datasets: two tasks, so forgetting one need not cost the other."""
    import torch

    from stages.common.io import read_dataset, write_dataset
    from tests.tiny import pruned_pair

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("unlearn-world")
    out = pruned_pair(root, pretrain_steps=60)
    recs = read_dataset(out["data"])
    forget = [r for r in recs if r["family"] == "reverse"][:24]
    retain = [r for r in recs if r["family"] == "add"]
    write_dataset(forget, root / "forget", source="unlearn-test")
    write_dataset(retain, root / "retain", source="unlearn-test")
    return {**out, "forget": root / "forget", "retain": root / "retain"}
