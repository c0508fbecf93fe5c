"""Any carp declaration as a Prefect flow: one task per node, run in parallel.

Each node is submitted with ``wait_for`` its upstream nodes' futures, so
independent branches (the variants of a sweep) run at the same time, at most
``max_parallel`` at once, each in a worker process (Prefect's
``ProcessPoolTaskRunner``; with ``max_parallel: 1`` in the flow's own process).
A failed node fails only its descendants, which are not run; independent
siblings finish. The
declaration is parsed once per flow run. Tasks call the same ``run_node`` as
``carp stage`` (what DVC runs), with the same cache keys: a node whose output
was made from the same params, input fingerprints and code is skipped with a
log line. Retries only for kinds that ask for them (``Kind.retries``; e.g. a
DeepSpeed launch that can lose a rank and resumes), not for deterministic
compute that would fail the same way again.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed
from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner

from pipelines.graph import Graph
from pipelines.kinds import KINDS, load_kind
from pipelines.lineage import NULL_RUN
from pipelines.runtime import (
    Layout,
    all_current,
    check_owner,
    end_status,
    open_lineage,
    run_node,
)


@dataclass
class FlowReport:
    """Outcome of a flow run: node -> manifest summary, failures, not-run nodes."""

    done: dict[str, dict[str, Any]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)  # node -> error
    not_run: dict[str, list[str]] = field(default_factory=dict)  # node -> failed ups

    def summary(self) -> str:
        lines = [f"carp: {len(self.done)} node(s) done"]
        for name, err in self.failed.items():
            lines.append(f"  FAILED  {name}: {err}")
        for name, ups in self.not_run.items():
            lines.append(f"  NOT RUN {name} (upstream failed: {', '.join(ups)})")
        if self.failed:
            lines[0] += f", {len(self.failed)} failed, {len(self.not_run)} not run"
        return "\n".join(lines)


def default_parallel() -> int:
    """One node per two CPU cores, at least one."""
    return max(1, (os.cpu_count() or 2) // 2)


def _limit_threads(parallel: int) -> None:
    """Share the cores between concurrent stages (torch/BLAS threads)."""
    if parallel <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // parallel))
    os.environ.setdefault("OMP_NUM_THREADS", threads)
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(int(threads))


def _init_worker(kinds: dict[str, str]) -> None:
    """Worker processes know the same kinds as the flow (plugins, test kinds)."""
    for name, target in kinds.items():
        if name not in KINDS:
            KINDS.register(name, target)


def task_runner(parallel: int, kind: str | None = None) -> Any:
    """One node at a time in the flow's process, or a pool of worker processes:
    stages set torch's global RNG and load models through process-wide state, so
    concurrent nodes need processes, not threads. ``kind`` (the declaration's
    ``task_runner``): ``dask`` = a local Dask cluster of ``parallel`` worker
    processes, ``tcp://HOST:PORT`` = a running Dask scheduler (prefect-dask)."""
    if kind == "dask" or (kind or "").startswith("tcp://"):
        try:
            from prefect_dask import DaskTaskRunner
        except ImportError:
            raise RuntimeError(
                f"task_runner: {kind} needs prefect-dask: pip install 'carp[dask]'"
            ) from None
        if kind != "dask":
            return DaskTaskRunner(address=kind)
        return DaskTaskRunner(
            cluster_kwargs={
                "n_workers": parallel,
                "threads_per_worker": 1,  # one node per worker process
                "processes": True,
                "dashboard_address": None,
            }
        )
    if kind not in (None, "process"):
        raise ValueError(
            f"task runner {kind!r}: use process, dask or tcp://HOST:PORT (a Dask "
            "scheduler)"
        )
    if parallel <= 1:
        return ThreadPoolTaskRunner(max_workers=1)
    return ProcessPoolTaskRunner(
        max_workers=parallel, initializer=_init_worker, initargs=(KINDS.entries(),)
    )


def _node_task(
    graph: Graph,
    name: str,
    layout: Layout,
    run: Any,
    force: bool,
    routed: tuple[str, str, list[str]] | None = None,
) -> dict[str, Any]:
    """Run (or skip) one node; return the small, JSON-able part of its manifest.
    ``routed``: (deployment, declaration file, overrides) of a node that runs on
    another work pool (``carp deploy --route``)."""
    if routed is not None:
        from flows.deploy import run_routed

        deployment, file, overrides = routed
        return run_routed(deployment, file, str(layout.home), overrides, name, run)
    manifest = run_node(graph, name, layout, run, force=force)
    return {k: manifest[k] for k in ("node", "cache_key", "fingerprint")}


def submit_all(
    graph: Graph,
    layout: Layout,
    run: Any,
    force: bool,
    runner: Any,
    routing: tuple[dict[str, str], str, list[str]] | None = None,
) -> tuple[dict[str, Any], FlowReport]:
    """Submit every node to ``runner`` after its upstream futures; collect the
    outcome (nodes downstream of a failure never start). Against a Prefect
    server (``PREFECT_API_URL``, where tag concurrency limits live) tasks are
    tagged ``carp-kind-<kind>`` / ``carp-stage-<stage>``; ``routing`` = (routes,
    file, overrides) of `carp deploy --route`."""
    from prefect.settings import PREFECT_API_URL

    from flows.deploy import route_of

    served = bool(PREFECT_API_URL.value())  # env or `prefect config set`
    futures: dict[str, Any] = {}
    for name, node in graph.nodes.items():
        t = task(
            _node_task,
            name=name,
            task_run_name=name,
            retries=load_kind(node.kind).retries_for(node.params),
            retry_delay_seconds=5,
            cache_policy=NO_CACHE,
            tags=[f"carp-kind-{node.kind}", f"carp-stage-{node.stage}"]
            if served
            else None,
        )
        ups = [futures[u] for u in node.upstream]
        args = {"graph": graph, "name": name, "layout": layout, "run": run}
        dest = route_of(node, routing[0]) if routing else None
        if dest is not None and routing is not None:
            args["routed"] = (dest, routing[1], routing[2])
        futures[name] = runner.submit(t, {**args, "force": force}, wait_for=ups)
    report = FlowReport()
    for name, fut in futures.items():
        fut.wait()
        state = fut.state
        if state.is_completed():
            report.done[name] = fut.result()
        elif state.is_failed() or state.is_crashed():
            report.failed[name] = _error(state)
        else:  # never ran: an upstream node failed
            bad = _failed_ancestors(graph, name, report.failed)
            report.not_run[name] = bad
    return futures, report


def _error(state: Any) -> str:
    try:
        state.result(raise_on_failure=True)
    except BaseException as e:  # noqa: BLE001 - reported, not handled
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return state.message or state.name


def _failed_ancestors(graph: Graph, name: str, failed: dict[str, str]) -> list[str]:
    seen, todo, out = set(), list(graph.nodes[name].upstream), []
    while todo:
        up = todo.pop()
        if up in seen:
            continue
        seen.add(up)
        if up in failed:
            out.append(up)
        todo.extend(graph.nodes[up].upstream)
    return sorted(out)


@flow(name="carp-pipeline", flow_run_name="{file}", log_prints=True)
def carp_pipeline(
    file: str = "params.yaml",
    root: str = ".",
    track: bool = True,
    force: bool = False,
    max_parallel: int | None = None,
    overrides: list[str] | None = None,
    routes: dict[str, str] | None = None,
    runner: str | None = None,
) -> Any:
    """Run every node of the declaration ``file`` (with ``overrides``, e.g.
    ``stages.prune.sparsity=0.6``); ``routes`` sends kinds/stages to other work
    pools' ``carp-node`` deployments. Fails naming the failed nodes."""
    report = _run(file, root, track, force, max_parallel, overrides, routes, runner)
    if report.failed:
        return Failed(message=report.summary(), data=report)
    return Completed(message=report.summary(), data=report)


def _run(
    file: str,
    root: str,
    track: bool,
    force: bool,
    max_parallel: int | None,
    overrides: list[str] | None = None,
    routes: dict[str, str] | None = None,
    runner: str | None = None,
) -> FlowReport:
    from flows.deploy import load_graph

    root_path = Path(root).resolve()
    path = Path(file) if Path(file).is_absolute() else root_path / file
    graph = load_graph(path, overrides)
    layout = Layout(root_path)
    check_owner(graph, layout)
    parallel = max_parallel or graph.decl.header.max_parallel or default_parallel()
    _limit_threads(parallel)
    # nothing would run: no parent run (it would stay empty)
    idle = not force and all_current(graph, layout)
    run = open_lineage(graph, layout, reuse=False) if track and not idle else NULL_RUN
    report = FlowReport()
    try:
        kind = runner or graph.decl.header.task_runner
        with task_runner(parallel, kind) as tr:
            print(f"carp: {len(graph.nodes)} nodes on {type(tr).__name__}")
            routing = (routes, file, list(overrides or [])) if routes else None
            _, report = submit_all(graph, layout, run, force, tr, routing)
    except BaseException as e:
        run.end(ok=False, status=end_status(e))
        raise
    run.end(ok=not report.failed and len(report.done) == len(graph.nodes))
    return report


class _Subprocess:
    """``subprocess`` as Prefect's server module sees it while carp starts the
    server: ``Popen`` children die with the thread that started them."""

    def __getattr__(self, name: str) -> Any:
        import subprocess

        return getattr(subprocess, name)

    @staticmethod
    def Popen(*args: Any, **kwargs: Any) -> Any:  # noqa: N802 - subprocess's name
        import subprocess

        from pipelines.procs import die_with_parent

        return subprocess.Popen(*args, preexec_fn=die_with_parent, **kwargs)


def ephemeral_server() -> None:
    """Start Prefect's temporary API server now, from this (main) thread, so
    that it dies with this process even on SIGKILL; Prefect would otherwise
    start it lazily and leave it orphaned. Nothing to do when PREFECT_API_URL
    names a long-lived server."""
    from prefect.server.api import server as module
    from prefect.settings import PREFECT_API_URL

    if PREFECT_API_URL.value():
        return
    real, module.subprocess = module.subprocess, _Subprocess()
    try:
        module.SubprocessASGIServer().start()  # the instance Prefect's client reuses
    finally:
        module.subprocess = real


def run_pipeline(
    file: str,
    root: Path,
    track: bool = True,
    force: bool = False,
    max_parallel: int | None = None,
    runner: str | None = None,
) -> FlowReport:
    """Run the flow and return its report (also when nodes failed)."""
    ephemeral_server()
    state = carp_pipeline(
        file=file,
        root=str(root),
        track=track,
        force=force,
        max_parallel=max_parallel,
        runner=runner,
        return_state=True,
    )
    report = state.result(raise_on_failure=False)
    if not isinstance(report, FlowReport):
        state.result(raise_on_failure=True)  # a flow-level error: re-raise it
        raise RuntimeError(f"flow ended {state.name}: {state.message}")
    return report


def check_cron(cron: str) -> None:
    """A cron string Prefect accepts, or ``ValueError`` with an example."""
    from prefect.client.schemas.schedules import CronSchedule
    from pydantic import ValidationError

    try:
        CronSchedule(cron=cron)
    except (ValidationError, ValueError) as e:
        raise ValueError(
            f"--cron {cron!r} is not a valid cron schedule; five fields: minute "
            'hour day-of-month month day-of-week, e.g. "0 3 * * *" (03:00 daily)'
        ) from e


def serve(file: str, cron: str, name: str | None = None) -> None:
    """Serve the flow with a cron schedule against a running Prefect server."""
    if not os.environ.get("PREFECT_API_URL"):
        raise SystemExit(
            "carp serve needs a Prefect server: run `prefect server start` and "
            "`prefect config set PREFECT_API_URL=http://127.0.0.1:4200/api` first"
        )
    check_cron(cron)
    path = Path(file).resolve()
    carp_pipeline.serve(
        name=name or f"carp-{path.stem}",
        cron=cron,
        parameters={"file": str(path), "root": str(Path.cwd())},
    )
