"""The run graph: declared stages expanded into nodes, and content fingerprints.

A declared stage with a ``matrix``/``seeds`` becomes one node per variant
(``select@paser-0.1``). A downstream stage that names a swept stage in a
single-valued input fans out per variant (variants of different swept stages
combine by natural join on their origins); a list-valued input (evaluate's
``models``) takes every variant as one list.
"""

from __future__ import annotations

import hashlib
import importlib.util
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from pipelines.contract import StageParams
from pipelines.kinds import KINDS
from pipelines.spec import Declaration, Issue, topo_order

# Engine-written files that are not part of an artifact's content.
META_FILES = frozenset({"carp.json", "metrics.json"})
PLOTS_DIR = "plots"


@dataclass(frozen=True)
class Node:
    """One runnable unit: a DVC stage, a Prefect task, an MLflow child run."""

    name: str  # "prune" or "select@paser-0.1"
    stage: str  # declared stage name
    kind: str
    params: StageParams
    inputs: dict[str, str | list[str]]  # field -> node name(s)
    origin: tuple[tuple[str, str], ...] = ()  # (swept stage, variant label)

    @property
    def upstream(self) -> list[str]:
        out: list[str] = []
        for v in self.inputs.values():
            for n in v if isinstance(v, list) else [v]:
                if n not in out:
                    out.append(n)
        return out


@dataclass
class Graph:
    decl: Declaration
    nodes: dict[str, Node] = field(default_factory=dict)  # in dependency order

    def downstream_of(self, name: str) -> list[str]:
        hit = {name}
        for node in self.nodes.values():
            if any(u in hit for u in node.upstream):
                hit.add(node.name)
        return [n for n in self.nodes if n in hit]


def _join(
    options: list[list[tuple[str, tuple[tuple[str, str], ...]]]],
) -> list[tuple[list[str], tuple[tuple[str, str], ...]]]:
    """Natural join of per-field (node, origin) candidates on shared origins."""
    out = []
    for combo in itertools.product(*options):
        merged: dict[str, str] = {}
        ok = True
        for _, origin in combo:
            for stage, label in origin:
                if merged.setdefault(stage, label) != label:
                    ok = False
        if ok:
            out.append(([n for n, _ in combo], tuple(merged.items())))
    return out


def build(decl: Declaration) -> Graph:
    """Expand a validated declaration into nodes in dependency order."""
    graph = Graph(decl)
    by_stage: dict[str, list[Node]] = {}
    for sname in topo_order(decl.stages, []):
        sd = decl.stages[sname]
        proto = sd.variants[0][1]
        in_fields = type(proto).input_fields()
        scalar = [
            f for f in in_fields if not isinstance(getattr(proto, f), list | tuple)
        ]
        scalar = [f for f in scalar if getattr(proto, f) is not None]
        options = [
            [(n.name, n.origin) for n in by_stage[getattr(proto, f)]] for f in scalar
        ]
        nodes: list[Node] = []
        for names, origin in _join(options) if options else [([], ())]:
            for label, params in sd.variants:
                full_origin = origin + ((sname, label),) if label else origin
                inputs: dict[str, str | list[str]] = dict(
                    zip(scalar, names, strict=True)
                )
                for f in in_fields:
                    value = getattr(params, f)
                    if isinstance(value, list | tuple):
                        inputs[f] = [n.name for ref in value for n in by_stage[ref]]
                suffix = "-".join(lbl for _, lbl in full_origin)
                name = f"{sname}@{suffix}" if suffix else sname
                nodes.append(Node(name, sname, sd.kind, params, inputs, full_origin))
        by_stage[sname] = nodes
        for node in nodes:
            graph.nodes[node.name] = node
    return graph


def canonical(obj: Any) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str)


def sha256(text: str | bytes) -> str:
    data = text.encode() if isinstance(text, str) else text
    return hashlib.sha256(data).hexdigest()


def declaration_hash(decl: Declaration) -> str:
    return sha256(canonical(decl.raw))[:16]


def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def folder_fingerprint(folder: Path, exclude: Iterable[str] = ()) -> str:
    """Content hash of an artifact folder (relative paths + file hashes).

    Engine metadata (``carp.json``, ``metrics.json``), ``plots/`` and the files in
    ``exclude`` (a stage's plots and run reports) are left out: they hold timings
    and renderings, not the artifact.
    """
    folder = Path(folder)
    skip = META_FILES | set(exclude)
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if not p.is_file() or rel in skip or rel.split("/")[0] == PLOTS_DIR:
            continue
        h.update(f"{rel}\0{file_digest(p)}\n".encode())
    return h.hexdigest()[:16]


@cache
def code_version(kind: str) -> str:
    """Hash of the source a kind runs (see :func:`code_roots`)."""
    files = {}
    for r in code_roots(kind):
        for f in [r] if r.is_file() else sorted(r.rglob("*.py")):
            files[f.relative_to(r.parent).as_posix()] = file_digest(f)
    return sha256(canonical(files))[:16]


def code_roots(kind: str) -> list[Path]:
    """What a kind runs: its package folder (or module file) and stages/common."""
    spec = importlib.util.find_spec(KINDS[kind])
    if spec is None or spec.origin is None:
        raise KeyError(f"kind '{kind}': module {KINDS[kind]} not found")
    origin = Path(spec.origin)
    own = origin.parent if origin.name == "__init__.py" else origin
    return [own, Path(__file__).resolve().parent.parent / "stages" / "common"]


def cache_key(node: Node, input_fps: dict[str, str | list[str]]) -> str:
    """Same key under DVC and Prefect: params + input content + code version."""
    payload = {
        "kind": node.kind,
        "params": node.params.model_dump(mode="json"),
        "inputs": input_fps,
        "code": code_version(node.kind),
    }
    return sha256(canonical(payload))[:16]


__all__ = ["Graph", "Issue", "Node", "build", "cache_key", "folder_fingerprint"]
