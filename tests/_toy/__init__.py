"""Toy stage kinds for engine tests: cheap, deterministic, no torch.

``toysrc`` writes a dataset of ``n`` records; ``toyadd`` reads one and writes a
dataset with ``offset`` added; ``toyfail`` writes a file and then raises.
"""

import pytest

from pipelines import kinds

TOY_KINDS = {"toysrc": "_toy.source", "toyadd": "_toy.add", "toyfail": "_toy.fail"}


@pytest.fixture
def toy_kinds(monkeypatch):
    for name, module in TOY_KINDS.items():
        monkeypatch.setitem(kinds.KINDS, name, module)
    return TOY_KINDS
