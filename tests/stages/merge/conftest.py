"""Fixtures of the merge tests (builders in tests/stages/merge/common.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.stages.merge.common import build_family


@pytest.fixture(scope="session")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return build_family(tmp_path_factory.mktemp("merge_family"))
