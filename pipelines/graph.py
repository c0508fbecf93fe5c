"""The run graph: declared stages expanded into nodes, and content fingerprints.

A declared stage with a ``matrix``/``seeds`` becomes one node per variant
(``select@paser-0.1``). A downstream stage that names a swept stage in a
single-valued input fans out per variant (variants of different swept stages
combine by natural join on their origins); a list-valued input (evaluate's
``models``) takes, as one list, every variant that agrees with the node's own
origin (an evaluate of world ``s1`` lists world ``s1``'s models only).
"""

from __future__ import annotations

import hashlib
import itertools
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pipelines.contract import StageParams
from pipelines.spec import (
    MAX_NODE_NAME,
    Declaration,
    DeclarationError,
    Issue,
    topo_order,
)

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


def _agrees(a: tuple[tuple[str, str], ...], b: tuple[tuple[str, str], ...]) -> bool:
    """Two origins name no stage with different labels (a list input fans in
    only the variants that agree with the node's own origin: an evaluate stage
    of world ``s1`` takes world ``s1``'s models, not every world's)."""
    mine = dict(b)
    return all(mine.get(stage, label) == label for stage, label in a)


def _resolve(
    by_stage: dict[str, list[Node]], ref: str, stage: str, field: str, source: str
) -> list[Node]:
    """The nodes an input names: every variant of a stage, or the one variant
    ``stage@label`` (its full node name), with a clear error if none is called so."""
    if "@" not in ref:
        return by_stage[ref]
    hit = [n for n in by_stage[ref.split("@", 1)[0]] if n.name == ref]
    if not hit:
        have = ", ".join(n.name for n in by_stage[ref.split("@", 1)[0]])
        raise DeclarationError(
            source,
            [
                Issue(
                    f"stages.{stage}.{field}",
                    f"no variant named '{ref}'; the variants are: {have}",
                )
            ],
        )
    return hit


def _scalar_inputs(params: StageParams) -> tuple[tuple[str, str], ...]:
    """(field, upstream stage) of the single-valued inputs that are set."""
    out = []
    for f in type(params).input_fields():
        v = getattr(params, f)
        if v is not None and not isinstance(v, list | tuple):
            out.append((f, v))
    return tuple(out)


def build(decl: Declaration) -> Graph:
    """Expand a validated declaration into nodes in dependency order.

    Variants are grouped by the single-valued inputs they read (a method sweep
    may mix methods with different inputs); each group fans out over the
    variants of those upstream stages, joined on shared origins.
    """
    graph = Graph(decl)
    by_stage: dict[str, list[Node]] = {}
    for sname in topo_order(decl.stages, []):
        sd = decl.stages[sname]
        groups: dict[tuple[tuple[str, str], ...], list[tuple[str, StageParams]]] = {}
        for label, params in sd.variants:
            groups.setdefault(_scalar_inputs(params), []).append((label, params))
        nodes: list[Node] = []
        for scalar, variants in groups.items():
            fields = [f for f, _ in scalar]
            options = [
                [
                    (n.name, n.origin)
                    for n in _resolve(by_stage, ref, sname, f, decl.source)
                ]
                for f, ref in scalar
            ]
            for names, origin in _join(options) if options else [([], ())]:
                for label, params in variants:
                    full_origin = origin + ((sname, label),) if label else origin
                    inputs: dict[str, str | list[str]] = dict(
                        zip(fields, names, strict=True)
                    )
                    for f in type(params).input_fields():
                        value = getattr(params, f)
                        if isinstance(value, list | tuple):
                            inputs[f] = [
                                n.name
                                for r in value
                                for n in _resolve(by_stage, r, sname, f, decl.source)
                                if "@" in r or _agrees(n.origin, origin)
                            ]
                    suffix = "-".join(lbl for _, lbl in full_origin)
                    name = f"{sname}@{suffix}" if suffix else sname
                    nodes.append(
                        Node(name, sname, sd.kind, params, inputs, full_origin)
                    )
        by_stage[sname] = nodes
        for node in nodes:
            graph.nodes[node.name] = node
    _check_node_inputs(graph, decl.source)
    too_long = [n for n in graph.nodes.values() if len(n.name) > MAX_NODE_NAME]
    if too_long:
        raise DeclarationError(
            decl.source,
            [
                Issue(
                    f"stages.{n.stage}",
                    f"variant name '{n.name[:40]}...' is too long ({len(n.name)} > "
                    f"{MAX_NODE_NAME} characters, it names a folder); use shorter "
                    "matrix values or stage names",
                )
                for n in too_long[:5]
            ],
        )
    return graph


def _check_node_inputs(graph: Graph, source: str) -> None:
    """What each kind says about its expanded inputs (``Kind.check_inputs``)."""
    from pipelines.kinds import load_kind

    issues: list[Issue] = []
    for node in graph.nodes.values():
        check = load_kind(node.kind).check_inputs
        for where, msg in check(node.params, node.inputs) if check else ():
            issue = Issue(f"stages.{node.stage}.{where}", f"{node.name}: {msg}")
            if str(issue) not in {str(i) for i in issues}:
                issues.append(issue)
    if issues:
        raise DeclarationError(source, issues)


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


REPO = Path(__file__).resolve().parent.parent


def node_code(node: Node) -> list[str]:
    """Repo-relative source files a node runs: its kind, its method and what
    they import, transitively (see :mod:`pipelines.code`). Modules of other
    top-level packages (plugins, test kinds) are followed within their package."""
    import importlib.util

    from pipelines.code import code_files
    from pipelines.kinds import load_kind

    by_top: dict[str, list[str]] = {}
    for mod in load_kind(node.kind).code_modules(node.params):
        by_top.setdefault(mod.split(".")[0], []).append(mod)
    files: list[str] = []
    for top, mods in by_top.items():
        base = REPO
        if top != "stages":
            spec = importlib.util.find_spec(top)
            if spec is None or spec.origin is None:
                raise KeyError(f"kind '{node.kind}': module {top} not found")
            base = Path(spec.origin).resolve().parent.parent
        for f in code_files(mods, base, packages=(top,)):
            path = (base / f).resolve()
            rel = path.relative_to(REPO) if path.is_relative_to(REPO) else path
            files.append(rel.as_posix())
    return sorted(dict.fromkeys(files))


def node_code_version(node: Node) -> str:
    from pipelines.code import code_version

    return code_version(node_code(node), REPO)


def cache_key(
    node: Node,
    input_fps: dict[str, str | list[str]],
    data_fps: dict[str, str] | None = None,
) -> str:
    """Same key under DVC and Prefect: params + input content + code version,
    and the content of the local data files the node reads (``data_fps``)."""
    payload: dict[str, Any] = {
        "kind": node.kind,
        "params": node.params.model_dump(mode="json"),
        "inputs": input_fps,
        "code": node_code_version(node),
    }
    if data_fps:
        payload["data"] = data_fps
    return sha256(canonical(payload))[:16]


def data_digest(path: Path) -> str:
    """Content digest of a data file or folder (every file under it, by
    relative path and bytes; hidden files and folders left out): not of its
    path or mtimes, so an edit shows even with the mtime put back."""
    import hashlib

    h = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*"))
    for f in files:
        rel = f.relative_to(path) if f != path else Path(f.name)
        if not f.is_file() or any(p.startswith(".") for p in rel.parts):
            continue
        h.update(f"{rel.as_posix()}\0".encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        h.update(b"\0")
    return h.hexdigest()[:16]


def data_fingerprints(node: Node, root: Path) -> dict[str, str]:
    """``data_digest`` of each local data path the node reads ("missing" for
    one that is not there: the stage itself says so when it runs)."""
    out = {}
    for rel in node.params.data_paths():
        path = (root / Path(rel).expanduser()).resolve()
        out[rel] = data_digest(path) if path.exists() else "missing"
    return out


__all__ = ["Graph", "Issue", "Node", "build", "cache_key", "folder_fingerprint"]
