"""Exact code identity of a node: the project files its modules import.

A node runs its kind module and its method module. What it depends on is the set
of project source files those two reach by imports, transitively. This module
computes that set from the source alone (``ast.parse``, never ``import``), so
``carp validate`` stays fast and never imports torch.

Rules (see :func:`module_closure`): every ``import``/``from ... import`` anywhere
in a file counts, including lazy imports inside functions; relative imports are
resolved against the importing module's package; importing ``a.b.c`` also counts
the packages ``a`` and ``a.b`` (Python runs their ``__init__``); string constants
that name a project module (``"stages.recover.task:build"``, a ``python -m``
target) count too, and an f-string ``f"pkg.sub.{name}"`` counts every module
directly in ``pkg.sub`` (a module picked at run time, e.g. the world's task
families); strings inside a ``Registry(...)`` call don't count: a registry lists
every method of a kind while a node runs only its own.
"""

from __future__ import annotations

import ast
import hashlib
import re
from collections.abc import Iterable, Iterator
from functools import cache
from pathlib import Path

DEFAULT_PACKAGES: tuple[str, ...] = ("stages",)
REGISTRY = "Registry"
_MODULE_STRING = re.compile(r"[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*(?::[\w.]+)?")
_STRINGS = (ast.Constant, ast.JoinedStr)
_PACKAGE_PREFIX = re.compile(r"(?:[A-Za-z_]\w*\.)+")


def module_file(name: str, root: Path) -> Path | None:
    """File of dotted module ``name`` under ``root``, or None if not a project file.

    A package (``a/b/__init__.py``) wins over a module file (``a/b.py``), as in
    Python's own finder.
    """
    parts = name.split(".")
    if not all(p.isidentifier() for p in parts):
        return None
    base = Path(root).joinpath(*parts)
    for candidate in (base / "__init__.py", base.with_name(base.name + ".py")):
        if candidate.is_file():
            return candidate
    return None


def _ancestors(name: str) -> Iterator[str]:
    """``a.b.c`` -> ``a``, ``a.b``, ``a.b.c``: the modules Python executes."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        yield ".".join(parts[:i])


def _package_of(name: str, path: Path) -> str:
    """The package a module's relative imports start from."""
    return name if path.name == "__init__.py" else name.rpartition(".")[0]


def _resolve_relative(node: ast.ImportFrom, name: str, path: Path) -> str | None:
    """Absolute module of a ``from ... import`` (None: above the top package)."""
    if node.level == 0:
        return node.module
    package = _package_of(name, path)
    parts = package.split(".") if package else []
    up = node.level - 1
    if up >= len(parts):
        return None
    base = parts[: len(parts) - up]
    return ".".join(base + ([node.module] if node.module else []))


def _registry_strings(tree: ast.AST) -> set[int]:
    """ids of the strings (constants, f-strings) inside ``Registry(...)`` calls."""
    skip: set[int] = set()
    for call in ast.walk(tree):
        if isinstance(call, ast.Call) and _call_name(call) == REGISTRY:
            skip.update(id(n) for n in ast.walk(call) if isinstance(n, _STRINGS))
    return skip


def _call_name(call: ast.Call) -> str | None:
    """``f`` for ``f(...)`` and ``m.f(...)``; None for other callees."""
    if isinstance(call.func, ast.Name):
        return call.func.id
    if isinstance(call.func, ast.Attribute):
        return call.func.attr
    return None


def _from_targets(
    node: ast.ImportFrom, name: str, path: Path, root: Path
) -> Iterator[str]:
    """Modules a ``from pkg import a, b`` names: ``pkg.a`` if a module, else ``pkg``."""
    pkg = _resolve_relative(node, name, path)
    if not pkg:
        return
    for alias in node.names:
        sub = f"{pkg}.{alias.name}"
        yield sub if alias.name != "*" and module_file(sub, root) else pkg


def _fstring_package(node: ast.JoinedStr) -> str | None:
    """``pkg.sub`` for ``f"pkg.sub.{name}"`` (a module picked at run time)."""
    head = node.values[0] if node.values else None
    if (
        len(node.values) > 1
        and isinstance(head, ast.Constant)
        and isinstance(head.value, str)
        and _PACKAGE_PREFIX.fullmatch(head.value)
        and isinstance(node.values[1], ast.FormattedValue)
    ):
        return head.value[:-1]
    return None


def _submodules(package: str, root: Path) -> Iterator[str]:
    """Modules directly inside a project package (``*.py`` and sub-packages)."""
    path = module_file(package, root)
    if path is None or path.name != "__init__.py":
        return
    for child in sorted(path.parent.iterdir()):
        name = child.stem if child.suffix == ".py" else child.name
        if name != "__init__" and module_file(f"{package}.{name}", root):
            yield f"{package}.{name}"


def _string_target(value: str) -> str:
    """Module part of ``"pkg.mod:attr"`` (the whole string when there is no ``:``)."""
    return value.partition(":")[0]


@cache
def _direct_imports(name: str, path: Path, root: Path) -> tuple[str, ...]:
    """Dotted names a module's file refers to (imports and module-naming strings)."""
    tree = ast.parse(path.read_bytes(), filename=str(path))
    skip = _registry_strings(tree)
    found: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.extend(_from_targets(node, name, path, root))
        elif (
            isinstance(node, ast.Constant)
            and isinstance(node.value, str)
            and id(node) not in skip
            and _MODULE_STRING.fullmatch(node.value)
        ):
            found.append(_string_target(node.value))
        elif isinstance(node, ast.JoinedStr) and id(node) not in skip:
            package = _fstring_package(node)
            found.extend(_submodules(package, root) if package else ())
    return tuple(dict.fromkeys(found))


def _expand(
    names: Iterable[str], root: Path, packages: tuple[str, ...]
) -> Iterator[str]:
    """Project modules among ``names`` and their parent packages."""
    for n in names:
        if n.split(".")[0] not in packages:
            continue
        for m in _ancestors(n):
            if module_file(m, root) is not None:
                yield m


@cache
def _closure(
    roots: tuple[str, ...], root: Path, packages: tuple[str, ...]
) -> tuple[str, ...]:
    """Memoised :func:`module_closure` (per process, per roots, root and packages)."""
    for r in roots:
        if r.split(".")[0] not in packages or module_file(r, root) is None:
            raise ValueError(
                f"module '{r}' is not a project module under {root} "
                f"(packages: {', '.join(packages)})"
            )
    seen: set[str] = set()
    todo = list(_expand(roots, root, packages))
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        path = module_file(mod, root)
        assert path is not None
        todo.extend(_expand(_direct_imports(mod, path, root), root, packages))
    return tuple(sorted(seen))


def module_closure(
    roots: Iterable[str], root: Path, packages: tuple[str, ...] = DEFAULT_PACKAGES
) -> list[str]:
    """Sorted dotted names of every project module reachable from ``roots``.

    Pure AST: files are parsed, never imported (rules in the module docstring).
    Only modules whose top-level
    package is in ``packages`` are kept and followed. A name in ``roots`` that is
    not such a module raises ValueError naming it. Memoised per process.
    """
    key = tuple(sorted(set(roots)))
    return list(_closure(key, Path(root).resolve(), tuple(packages)))


def code_files(
    roots: Iterable[str], root: Path, packages: tuple[str, ...] = DEFAULT_PACKAGES
) -> list[str]:
    """Sorted POSIX paths, relative to ``root``, of :func:`module_closure`'s files."""
    root = Path(root).resolve()
    files = []
    for mod in module_closure(roots, root, packages):
        path = module_file(mod, root)
        assert path is not None
        files.append(path.relative_to(root).as_posix())
    return sorted(files)


def _file_sha256(path: Path) -> str:
    """Hex sha256 of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def code_version(files: Iterable[str], root: Path) -> str:
    """16-hex sha256 over (relative path, content sha256) pairs, order-independent."""
    h = hashlib.sha256()
    for rel in sorted(set(files)):
        h.update(f"{rel}\0{_file_sha256(Path(root) / rel)}\n".encode())
    return h.hexdigest()[:16]


__all__ = ["code_files", "code_version", "module_closure", "module_file"]
