"""Exact code identity: the project files a node's modules import (pipelines/code)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.code import code_files, code_version, module_closure, module_file

ROOT = Path(__file__).resolve().parents[2]

FAKE = {
    "stages/__init__.py": '"""Fake stage library."""\n',
    "stages/k/__init__.py": (
        "from pipelines.contract import Registry\n"
        "from stages.k.shared import CONST\n"
        'METHODS = Registry("k", {"a": "stages.k.a", "b": "stages.k.b"})\n'
        'BUILDER = "stages.k.task:build"\n'
    ),
    "stages/k/shared.py": "CONST = 1\n",
    "stages/k/task.py": "def build():\n    return 1\n",
    "stages/k/a.py": (
        '"""Method a: lazy common helper, relative import."""\n'
        "from . import rel\n"
        "def run():\n"
        "    import torch\n"
        "    from stages.common import helper\n"
        "    return helper.f(), torch\n"
    ),
    "stages/k/rel.py": "X = 2\n",
    "stages/k/b.py": (
        '"""Method b: only the kind package."""\n'
        "from stages.k import CONST\n"
        "from ..common import io as _io_name_only  # noqa\n"
    ),
    "stages/k/unused.py": "Y = 3\n",
    "stages/common/__init__.py": "",
    "stages/common/helper.py": (
        "import os\nfrom .deep import g\ndef f():\n    return g()\n"
    ),
    "stages/common/deep.py": "def g():\n    return 0\n",
    "stages/common/io.py": "Z = 4\n",
    "stages/k/plug/__init__.py": "",
    "stages/k/plug/p1.py": "",
    "stages/k/plug/p2.py": "",
    "stages/k/dyn.py": (
        "import importlib\n"
        "from pipelines.contract import Registry\n"
        'R = Registry("x", {n: f"stages.common.{n}" for n in ("io",)})\n'
        "def load(n):\n"
        '    return importlib.import_module(f"stages.k.plug.{n}")\n'
    ),
    "pipelines/__init__.py": "",
    "pipelines/contract.py": "class Registry:\n    pass\n",
}
KIND = ["stages", "stages.k", "stages.k.shared", "stages.k.task"]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    for rel, text in FAKE.items():
        path = tmp_path / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    # bytecode next to the sources must never count as code
    cache = tmp_path / "stages/k/__pycache__"
    cache.mkdir()
    (cache / "a.cpython-310.pyc").write_bytes(b"\0\0")
    (tmp_path / "stages/k/b.pyc").write_bytes(b"\0\0")
    return tmp_path


def test_module_file(tree: Path) -> None:
    assert module_file("stages.k", tree) == tree / "stages/k/__init__.py"
    assert module_file("stages.k.a", tree) == tree / "stages/k/a.py"
    assert module_file("stages.k.nope", tree) is None
    assert module_file("stages.k.a:run", tree) is None


def test_closure_method_a(tree: Path) -> None:
    got = module_closure(["stages.k", "stages.k.a"], tree)
    assert got == sorted(
        KIND
        + [
            "stages.k.a",
            "stages.k.rel",
            "stages.common",
            "stages.common.helper",
            "stages.common.deep",
        ]
    )


def test_closure_method_b(tree: Path) -> None:
    got = module_closure(["stages.k", "stages.k.b"], tree)
    assert got == sorted(KIND + ["stages.k.b", "stages.common", "stages.common.io"])


def test_fstring_counts_the_package_modules(tree: Path) -> None:
    got = module_closure(["stages.k.dyn"], tree)
    assert got == sorted(
        KIND + ["stages.k.dyn", "stages.k.plug", "stages.k.plug.p1", "stages.k.plug.p2"]
    )


def test_code_files_are_sources_only(tree: Path) -> None:
    files = code_files(["stages.k", "stages.k.a"], tree)
    assert files == sorted(files)
    assert "stages/k/a.py" in files and "stages/k/__init__.py" in files
    assert "stages/k/b.py" not in files and "stages/k/unused.py" not in files
    assert not any("__pycache__" in f or f.endswith(".pyc") for f in files)
    assert not any(f.startswith("pipelines/") for f in files)


def test_other_method_edit_keeps_version(tree: Path) -> None:
    files = code_files(["stages.k", "stages.k.a"], tree)
    before = code_version(files, tree)
    (tree / "stages/k/b.py").write_text("CHANGED = True\n")
    (tree / "stages/k/unused.py").write_text("CHANGED = True\n")
    assert code_version(code_files(["stages.k", "stages.k.a"], tree), tree) == before
    (tree / "stages/common/deep.py").write_text("def g():\n    return 1\n")
    assert code_version(files, tree) != before


def test_code_version_is_order_independent(tree: Path) -> None:
    files = code_files(["stages.k", "stages.k.a"], tree)
    v = code_version(files, tree)
    assert len(v) == 16 and int(v, 16) >= 0
    assert code_version(reversed(files), tree) == v
    assert code_version(files[1:], tree) != v


def test_unknown_root_raises(tree: Path) -> None:
    with pytest.raises(ValueError, match="stages.k.missing"):
        module_closure(["stages.k", "stages.k.missing"], tree)
    with pytest.raises(ValueError, match="pipelines.contract"):
        code_files(["pipelines.contract"], tree)


def test_real_repo_prune_magnitude() -> None:
    files = code_files(["stages.prune", "stages.prune.magnitude"], ROOT)
    assert "stages/prune/magnitude.py" in files
    assert "stages/prune/__init__.py" in files
    assert "stages/prune/owl.py" in files  # magnitude's OWL profile
    # other methods' modules are not part of magnitude's code identity
    assert "stages/prune/sparsegpt.py" not in files
    assert "stages/prune/depth.py" not in files
    assert not any(f.startswith("stages/common/train/") for f in files)


def test_real_repo_recover_full() -> None:
    files = code_files(["stages.recover", "stages.recover.full"], ROOT)
    assert any(f.startswith("stages/common/train/") for f in files)
