"""`carp deploy FILE --pool NAME --cron ... | --interval ...`: a Prefect
deployment of a declaration on a work pool, on a schedule. Its parameters are
the declaration path (relative to the project) and overrides
(``stages.prune.sparsity=0.6``), applied and validated in the flow run.

Routing. ``--route KIND_OR_STAGE=POOL`` sends those nodes to another work pool
(GPU stages to a GPU pool): each runs as a flow run of the ``carp-node``
deployment on that pool (created alongside), the pipeline's flow waits for it;
lineage joins the same MLflow parent run. Every node task is tagged
``carp-kind-<kind>`` and ``carp-stage-<stage>``, so a Prefect tag concurrency
limit bounds them (``prefect concurrency-limit create carp-kind-recover 1``).
"""

from __future__ import annotations

import hashlib
import os
from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from prefect import flow

from pipelines.graph import Graph, build
from pipelines.spec import load_yaml, validate

NODE_FLOW = "carp-node"
ENTRY_PIPELINE = "flows/pipeline.py:carp_pipeline"
ENTRY_NODE = "flows/deploy.py:carp_node"


def parse_override(item: str) -> tuple[list[str], Any]:
    """``stages.prune.sparsity=0.6`` -> (["stages", "prune", "sparsity"], 0.6)."""
    key, sep, value = item.partition("=")
    path = key.split(".")
    if not sep or not all(path):
        raise ValueError(
            f"override {item!r}: write KEY.PATH=VALUE, e.g. stages.prune.sparsity=0.6"
        )
    return path, yaml.safe_load(value) if value else ""


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """A copy of ``raw`` with each dotted key set (a missing key is an error, so
    a typo never adds a silent field)."""
    import copy

    out = copy.deepcopy(raw)
    for item in overrides:
        path, value = parse_override(item)
        here = out
        for i, k in enumerate(path[:-1]):
            if not isinstance(here.get(k), dict):
                raise ValueError(
                    f"override {item!r}: {'.'.join(path[: i + 1])} is not a mapping "
                    "of the declaration"
                )
            here = here[k]
        here[path[-1]] = value
    return out


def load_graph(file: str | Path, overrides: list[str] | None = None) -> Graph:
    """The declaration with ``overrides`` applied, validated and expanded."""
    raw = load_yaml(Path(file))
    if not overrides:
        return build(validate(raw, source=str(file)))
    src = f"{file} + {' '.join(overrides)}"
    return build(validate(apply_overrides(raw, overrides), source=src))


def route_of(node: Any, routes: dict[str, str]) -> str | None:
    """The deployment a node is routed to: by stage name, else by kind."""
    return routes.get(node.stage) or routes.get(node.kind)


def run_routed(
    deployment: str, file: str, root: str, overrides: list[str], name: str, run: Any
) -> dict[str, Any]:
    """Run node ``name`` as a flow run of ``deployment`` and wait for it."""
    from prefect.deployments import run_deployment

    state = getattr(run, "__getstate__", dict)()
    lineage = {k: str(v) for k, v in state.items()} if state else None
    fr = run_deployment(
        name=deployment,
        parameters={
            "file": file,
            "root": root,
            "node": name,
            "overrides": overrides,
            "lineage": lineage,
        },
        timeout=None,
    )
    if not fr.state or not fr.state.is_completed():
        msg = fr.state.message if fr.state else "no state"
        raise RuntimeError(f"{deployment} ran {name}: {fr.state_name}: {msg}")
    # the node's manifest, from the shared project folder (flow results of
    # another process are not persisted)
    from pipelines.runtime import Layout, read_manifest

    manifest = read_manifest(Layout(Path(root)).out(name))
    if manifest is None:
        raise RuntimeError(f"{deployment} ran {name} but {root} has no output of it")
    return {k: manifest[k] for k in ("node", "cache_key", "fingerprint")}


@flow(name=NODE_FLOW, flow_run_name="{node}", log_prints=True)
def carp_node(
    file: str,
    root: str,
    node: str,
    overrides: list[str] | None = None,
    lineage: dict[str, str] | None = None,
    force: bool = False,
) -> dict[str, Any]:
    """One node of a declaration, on whatever pool this deployment serves;
    joins the pipeline's MLflow parent run when ``lineage`` names it."""
    from pipelines.lineage import NULL_RUN, PipelineRun
    from pipelines.runtime import Layout, run_node

    root_path = Path(root).resolve()
    path = Path(file) if Path(file).is_absolute() else root_path / file
    graph = load_graph(path, overrides)
    run: Any = NULL_RUN
    if lineage:
        run = PipelineRun.__new__(PipelineRun)
        run.__setstate__({**lineage, "root": Path(lineage["root"])})
    manifest = run_node(graph, node, Layout(root_path), run, force=force)
    return {k: manifest[k] for k in ("node", "cache_key", "fingerprint")}


def deploy(
    file: str,
    pool: str,
    cron: str | None = None,
    interval: float | None = None,
    name: str | None = None,
    overrides: list[str] | None = None,
    routes: dict[str, str] | None = None,
    root: Path | None = None,
) -> list[str]:
    """Create (or update) the deployments; return their full names."""
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "carp deploy needs a Prefect server: `prefect server start`, then "
            "PREFECT_API_URL=http://127.0.0.1:4200/api"
        )
    from flows.pipeline import carp_pipeline

    root = (root or Path.cwd()).resolve()
    path = Path(file).resolve()
    rel = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
    graph = load_graph(path, overrides)  # refuse a bad declaration up front
    name = name or f"carp-{graph.decl.header.pipeline}"
    overrides = list(overrides or [])
    routes = dict(routes or {})
    unknown = (
        set(routes)
        - {n.kind for n in graph.nodes.values()}
        - {n.stage for n in graph.nodes.values()}
    )
    if unknown:
        raise ValueError(
            f"--route {', '.join(sorted(unknown))}: no such kind or stage in {file}"
        )
    schedule: dict[str, Any] = {}
    if cron:
        from flows.pipeline import check_cron

        check_cron(cron)
        schedule["cron"] = cron
    elif interval:
        schedule["interval"] = timedelta(seconds=interval)
    made, targets = [], {}
    for what, target in sorted(routes.items()):
        dep = f"{name}-{target}"
        if dep not in targets.values():
            carp_node.from_source(source=str(root), entrypoint=ENTRY_NODE).deploy(
                name=dep,
                work_pool_name=target,
                build=False,
                push=False,
                print_next_steps=False,
                description=f"{name}: nodes routed to {target}",
            )
            made.append(f"{NODE_FLOW}/{dep}")
        targets[what] = f"{NODE_FLOW}/{dep}"
    digest = hashlib.sha256(" ".join(overrides).encode()).hexdigest()[:8]
    carp_pipeline.from_source(source=str(root), entrypoint=ENTRY_PIPELINE).deploy(
        name=name,
        work_pool_name=pool,
        build=False,
        push=False,
        print_next_steps=False,
        parameters={
            "file": rel,
            "root": str(root),
            "overrides": overrides,
            "routes": targets,
        },
        description=f"{rel} ({len(graph.nodes)} nodes; overrides {digest})",
        **schedule,
    )
    return [f"carp-pipeline/{name}", *made]
