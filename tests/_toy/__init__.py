"""Toy stage kinds for engine tests: cheap, deterministic, no torch.

``toysrc`` writes a dataset of ``n`` records; ``toyadd`` reads one and writes a
dataset with ``offset`` added; ``toyfail`` writes a file and then raises.
"""

import pytest

from pipelines import kinds

TOY_KINDS = {
    "toysrc": "_toy.source:KIND",
    "toyadd": "_toy.add:KIND",
    "toyfail": "_toy.fail:KIND",
}


@pytest.fixture
def toy_kinds():
    for name, target in TOY_KINDS.items():
        kinds.KINDS.register(name, target)
    yield TOY_KINDS
    for name in TOY_KINDS:
        kinds.KINDS.unregister(name)
