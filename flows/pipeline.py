"""Any carp declaration as a Prefect flow: one task per node, dependency order.

Tasks call the same ``run_node`` as ``carp stage`` (what DVC runs), with the
same cache keys: a node whose output was made from the same params, input
fingerprints and code is skipped with a log line. Retries only for kinds that
declare them (``retries(params)``; e.g. a DeepSpeed launch that can lose a rank), not
for deterministic compute that would fail the same way again.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from pipelines.graph import build
from pipelines.kinds import load_kind
from pipelines.runtime import Layout, open_lineage, run_node
from pipelines.spec import load


def _stage_task(
    file: str, root: str, name: str, parent_id: str | None, force: bool
) -> dict[str, Any]:
    """Run (or skip) one node; returns the small, JSON-able part of its manifest."""
    graph = build(load(file))
    layout = Layout(Path(root))
    lineage = None
    if parent_id is not None:
        lineage, _ = open_lineage(graph, layout, reuse=True, parent_id=parent_id)
    manifest = run_node(graph, name, layout, lineage, parent_id, force=force)
    return {k: manifest[k] for k in ("node", "cache_key", "fingerprint")}


def retries_for(kind: Any, params: Any) -> int:
    """Retries a kind asks for with these params (``retries(params)``); 0 if none.

    Deterministic compute fails the same way twice; only launches that can lose
    a rank or a port (DeepSpeed) and resume from checkpoints are worth a retry.
    """
    fn = getattr(kind, "retries", None)
    return int(fn(params)) if fn else 0


@flow(name="carp-pipeline", flow_run_name="{file}", log_prints=True)
def carp_pipeline(
    file: str = "params.yaml", root: str = ".", track: bool = True, force: bool = False
) -> dict[str, Any]:
    """Run every node of the declaration ``file`` in dependency order."""
    root = str(Path(root).resolve())
    file = str(Path(file) if Path(file).is_absolute() else Path(root) / file)
    graph = build(load(file))
    layout = Layout(Path(root))
    parent_id = None
    lineage = None
    if track:
        lineage, parent_id = open_lineage(graph, layout, reuse=False)
    results: dict[str, Any] = {}
    ok = False
    try:
        for name, node in graph.nodes.items():
            retries = retries_for(load_kind(node.kind), node.params)
            t = task(
                _stage_task,
                name=name,
                retries=retries,
                retry_delay_seconds=5,
                cache_policy=NO_CACHE,
            )
            results[name] = t(file, root, name, parent_id, force)
        ok = True
    finally:
        if lineage is not None:
            lineage.end(parent_id, ok=ok)
    return results


def run_pipeline(
    file: str, root: Path, track: bool = True, force: bool = False
) -> dict[str, Any]:
    return carp_pipeline(file=file, root=str(root), track=track, force=force)


def serve(file: str, cron: str, name: str | None = None) -> None:
    """Serve the flow with a cron schedule against a running Prefect server."""
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "carp serve needs a Prefect server: run `prefect server start` and "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` first"
        )
    path = Path(file).resolve()
    carp_pipeline.serve(
        name=name or f"carp-{path.stem}",
        cron=cron,
        parameters={"file": str(path), "root": str(Path.cwd())},
    )
