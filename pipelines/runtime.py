"""Stage runtime: resolve inputs, run one node, write metadata, publish atomically.

Used by ``carp stage`` (what DVC calls) and by the Prefect flow alike, so both
compute the same fingerprints and write the same folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pipelines import __version__
from pipelines.contract import Kind, RunContext, StageResult
from pipelines.graph import (
    Graph,
    Node,
    cache_key,
    data_fingerprints,
    declaration_hash,
    folder_fingerprint,
)
from pipelines.kinds import load_kind
from pipelines.lineage import NULL_RUN

log = logging.getLogger("carp")

ARTIFACTS = "artifacts"
REPORTS = "reports"
CHECKPOINTS = "checkpoints"
MANIFEST = "carp.json"
VERSIONED = ("torch", "transformers", "deepspeed", "peft", "mlflow", "dvc", "prefect")


class StageError(RuntimeError):
    """A stage could not run; the message says which and why."""


@dataclass(frozen=True)
class Layout:
    """Where a project keeps things. ``root`` is the working copy DVC runs in;
    ``home`` the real repository (differs under ``dvc exp run --temp``)."""

    root: Path

    @property
    def home(self) -> Path:
        if os.environ.get("DVC_ROOT"):  # set by DVC for (temp-dir) experiments
            return Path(os.environ["DVC_ROOT"]).resolve()
        parts = self.root.resolve().parts
        if ".dvc" in parts:
            i = parts.index(".dvc")
            if parts[i + 1 : i + 3] == ("tmp", "exps"):
                return Path(*parts[:i])
        return self.root.resolve()

    def out(self, node: str) -> Path:
        return self.root / ARTIFACTS / node

    def report(self, node: str) -> Path:
        return self.root / REPORTS / node

    def checkpoint(self, node: str) -> Path:
        return self.root / CHECKPOINTS / node


def read_manifest(folder: Path) -> dict[str, Any] | None:
    f = folder / MANIFEST
    return json.loads(f.read_text()) if f.exists() else None


def versions() -> dict[str, str]:
    out = {"carp": __version__}
    for pkg in VERSIONED:
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[pkg] = metadata.version(pkg)
    return out


def input_folders(graph: Graph, node: Node, layout: Layout) -> dict[str, Any]:
    """Map each input field to its upstream folder(s); fail clearly if missing."""
    out: dict[str, Any] = {}
    for field, ref in node.inputs.items():
        refs = ref if isinstance(ref, list) else [ref]
        paths = []
        for r in refs:
            p = layout.out(r)
            restore_interrupted(p)
            if read_manifest(p) is None:
                raise StageError(
                    f"stage '{node.name}': input '{field}' needs '{r}', but {p} holds "
                    f"no finished output; run `dvc repro {r}` or `carp run` first"
                )
            paths.append(p)
        out[field] = paths if isinstance(ref, list) else paths[0]
    return out


def input_fingerprints(inputs: dict[str, Any]) -> dict[str, Any]:
    def fp(p: Path) -> str:
        return str((read_manifest(p) or {}).get("fingerprint"))

    return {
        k: [fp(p) for p in v] if isinstance(v, list) else fp(v)
        for k, v in inputs.items()
    }


def is_current(layout: Layout, node: Node, key: str) -> bool:
    """True when the published output was made with ``key`` and is intact."""
    out = layout.out(node.name)
    man = read_manifest(out)
    if not man or man.get("cache_key") != key:
        return False
    return man.get("fingerprint") == folder_fingerprint(out, volatile(man))


def volatile(manifest: dict[str, Any]) -> list[str]:
    """Files of an output that are not part of its fingerprint."""
    return [*manifest.get("plots", []), *manifest.get("reports", [])]


def _leftovers(dest: Path, kinds: str = "tmp|trash") -> list[Path]:
    """``.tmp-``/``.trash-`` folders of ``dest`` (a killed run's)."""
    pattern = re.compile(rf"\.({kinds})-{re.escape(dest.name)}-[0-9a-f]{{8}}")
    if not dest.parent.is_dir():
        return []
    return sorted(p for p in dest.parent.iterdir() if pattern.fullmatch(p.name))


def _complete(folder: Path) -> bool:
    """A published folder still whole: an output matching its manifest (file
    sizes), or a report folder with its metrics."""
    man = read_manifest(folder)
    if man is not None:
        return _unchanged(folder, man, str(man.get("fingerprint")))[0]
    return (folder / "metrics.json").is_file()


def restore_interrupted(dest: Path) -> bool:
    """A publish killed (SIGKILL) between its two renames leaves ``dest``
    missing and the last good output in ``.trash-<name>-*``: rename it back.
    True when it did."""
    if dest.exists():
        return False
    for trash in _leftovers(dest, "trash"):
        if _complete(trash):
            os.replace(trash, dest)
            log.info("restored %s (its last publish was interrupted)", dest)
            return True
    return False


def clean_stale(dest: Path) -> None:
    """Put back an output a killed publish left aside (see
    :func:`restore_interrupted`), then remove the ``.tmp-``/``.trash-`` folders
    a killed run of this node left."""
    restore_interrupted(dest)
    for p in _leftovers(dest):
        shutil.rmtree(p, ignore_errors=True)


@contextlib.contextmanager
def _signals_held():
    """SIGTERM/SIGINT arriving in the block take effect when it ends (main
    thread; elsewhere Python raises them in the main thread anyway), so an
    interrupt never lands between the renames of a publish."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    got: list[int] = []
    held = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda n, f: got.append(n)) for s in held}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, signal.SIG_DFL if handler is None else handler)
        if got:
            signal.raise_signal(got[0])


def _publish(tmp: Path, dest: Path) -> None:
    """Swap ``tmp`` into ``dest`` with renames; the old folder goes last."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    trash = dest.with_name(f".trash-{dest.name}-{uuid.uuid4().hex[:8]}")
    if dest.exists():
        os.replace(dest, trash)
    os.replace(tmp, dest)
    shutil.rmtree(trash, ignore_errors=True)


def _write_report(layout: Layout, node: Node, out: Path, plots: list[str]) -> None:
    """reports/<node>/: metrics.json + plots/, what dvc.yaml declares."""
    rep = layout.report(node.name)
    tmp = rep.with_name(f".tmp-{rep.name}-{uuid.uuid4().hex[:8]}")
    (tmp / "plots").mkdir(parents=True)
    shutil.copy2(out / "metrics.json", tmp / "metrics.json")
    for rel in plots:
        shutil.copy2(out / rel, tmp / "plots" / Path(rel).name)
    _publish(tmp, rep)


@dataclass(frozen=True)
class Prepared:
    """A node ready to run: its kind, input folders and fingerprints, cache key."""

    node: Node
    kind: Kind
    inputs: dict[str, Any]
    input_fps: dict[str, Any]
    key: str
    decl_hash: str
    pipeline: str = ""


def prepare(graph: Graph, name: str, layout: Layout) -> Prepared:
    """Resolve a node's inputs (failing clearly when one is missing) and key."""
    node = graph.nodes[name]
    inputs = input_folders(graph, node, layout)
    in_fps = input_fingerprints(inputs)
    verify_inputs(node, inputs, in_fps)
    return Prepared(
        node,
        load_kind(node.kind),
        inputs,
        in_fps,
        cache_key(node, in_fps, data_fingerprints(node, layout.root)),
        declaration_hash(graph.decl),
        graph.decl.header.pipeline,
    )


def file_sizes(folder: Path) -> dict[str, int]:
    """Relative path -> size of every file of an output (its manifest aside)."""
    return {
        p.relative_to(folder).as_posix(): p.stat().st_size
        for p in sorted(Path(folder).rglob("*"))
        if p.is_file() and p.name != MANIFEST
    }


def _unchanged(path: Path, man: dict[str, Any], fp: str) -> tuple[bool, str]:
    """Whether an input folder still holds what its manifest recorded: the file
    list and sizes when the manifest has them (cheap, also for a 13 GB
    checkpoint; catches truncated and missing files), else the full content
    fingerprint."""
    sizes = man.get("sizes")
    if isinstance(sizes, dict):
        now = file_sizes(path)
        bad = sorted(k for k in sizes if now.get(k) != sizes[k])
        return not bad, f"files {', '.join(bad[:3])} differ in size or are missing"
    now_fp = folder_fingerprint(path, volatile(man))
    return now_fp == fp, f"fingerprint {now_fp}, recorded {fp}"


def verify_inputs(node: Node, inputs: dict[str, Any], fps: dict[str, Any]) -> None:
    """Each input folder still holds what its manifest recorded (a truncated or
    lost file is caught here, before the stage loads it)."""
    for field, value in inputs.items():
        paths = value if isinstance(value, list) else [value]
        recorded = fps[field] if isinstance(value, list) else [fps[field]]
        for path, fp in zip(paths, recorded, strict=True):
            man = read_manifest(path) or {}
            ok, what = _unchanged(path, man, fp)
            if not ok:
                raise StageError(
                    f"stage '{node.name}': input '{field}' ({path}) changed since it "
                    f"was written ({what}): a file is "
                    "damaged or was edited; restore it with `dvc checkout --force "
                    f"{ARTIFACTS}/{path.name}` (the version dvc.lock records; run "
                    f"in the project root) or re-run `carp stage {path.name}`"
                )


def check_owner(graph: Graph, layout: Layout, names: list[str] | None = None) -> None:
    """Refuse to overwrite outputs another pipeline (by name) made in this
    checkout: all declarations share ``artifacts/<node>``."""
    mine = graph.decl.header.pipeline
    clash = []
    for name in names if names is not None else list(graph.nodes):
        theirs = (read_manifest(layout.out(name)) or {}).get("pipeline")
        if theirs is not None and theirs != mine:
            clash.append((name, theirs))
    if not clash:
        return
    shown = ", ".join(f"{ARTIFACTS}/{n} ({p!r})" for n, p in clash[:8])
    more = f" and {len(clash) - 8} more" if len(clash) > 8 else ""
    raise StageError(
        f"pipeline {mine!r} ({graph.decl.source}) would overwrite outputs made by "
        f"another pipeline: {shown}{more}. Run it in its own checkout (e.g. "
        "`git worktree add ../other` or `cd` to a copy), or delete those folders "
        "to replace them"
    )


def remote_code(prep: Prepared) -> bool:
    """``trust_remote_code`` declared on this node (``pretrained``) or recorded
    on one of its inputs: the node's output records it in turn, so loaders of
    models made from a trusted checkpoint run its code, and no others do."""
    if load_kind(prep.node.kind).runs_shipped_code(prep.node.params):
        return True
    for value in prep.inputs.values():
        for path in value if isinstance(value, list) else [value]:
            if (read_manifest(path) or {}).get("trust_remote_code") is True:
                return True
    return False


def stage_tags(prep: Prepared, layout: Layout) -> dict[str, str]:
    """MLflow tags of a node's child run."""
    from pipelines.lineage import git_commit

    node = prep.node
    tags = {
        "carp.stage": node.stage,
        "carp.node": node.name,
        "carp.kind": node.kind,
        "carp.method": node.params.method,
        "carp.cache_key": prep.key,
        "carp.decl_hash": prep.decl_hash,
        "carp.git_commit": git_commit(layout.home),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["carp.dvc_exp"] = os.environ["DVC_EXP_NAME"]
    if remote_code(prep):
        tags["carp.trust_remote_code"] = "true"
    for k, v in prep.input_fps.items():  # fingerprints, and the nodes they are
        tags[f"carp.input.{k}"] = ",".join(v) if isinstance(v, list) else v
        names = node.inputs.get(k, [])
        tags[f"carp.input_node.{k}"] = (
            ",".join(names) if isinstance(names, list) else names
        )
    return tags


def execute(prep: Prepared, layout: Layout, tmp: Path, stage: Any) -> StageResult:
    """Run the kind into the empty folder ``tmp`` and write the engine's files
    (metrics.json, params.resolved.yaml, carp.json) beside its output."""
    node, kind = prep.node, prep.kind
    ckpt = None
    if kind.resumable:
        ckpt = layout.checkpoint(node.name)
        ckpt.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        seed=int(node.params.seed or 0),
        checkpoint_dir=ckpt,
        name=node.name,
        input_fingerprints=prep.input_fps,
        log_fn=stage.log_step,
    )
    t0 = time.time()
    result = kind.run(node.params, prep.inputs, tmp, ctx)
    metrics = {k: float(v) for k, v in result.metrics.items()}
    metrics["stage_seconds"] = round(time.time() - t0, 3)
    result.metrics = metrics
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
    resolved = {
        "stage": node.stage,
        "node": node.name,
        "kind": node.kind,
        "params": node.params.model_dump(mode="json"),
        "inputs": node.inputs,
    }
    (tmp / "params.resolved.yaml").write_text(yaml.safe_dump(resolved, sort_keys=True))
    manifest = {
        "node": node.name,
        "stage": node.stage,
        "kind": node.kind,
        "method": node.params.method,
        "artifact": sorted(kind.outputs(node.params)),
        "cache_key": prep.key,
        "fingerprint": folder_fingerprint(tmp, [*result.plots, *result.reports]),
        "inputs": prep.input_fps,
        "input_nodes": node.inputs,
        "declaration": prep.decl_hash,
        "pipeline": prep.pipeline,
        "versions": versions(),
        "plots": result.plots,
        "reports": result.reports,
        "datasets": result.datasets,
        "sizes": file_sizes(tmp),
        **result.extra_manifest,
    }
    if remote_code(prep):
        manifest["trust_remote_code"] = True
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
    return result


def publish(prep: Prepared, layout: Layout, tmp: Path, result: StageResult) -> None:
    """Swap the finished folder into artifacts/<node>, then reports/<node>."""
    out = layout.out(prep.node.name)
    with _signals_held():
        _publish(tmp, out)
        _write_report(layout, prep.node, out, result.plots)


def end_status(e: BaseException | None) -> str:
    """MLflow status of a run that ended with ``e`` (None: it succeeded)."""
    if e is None:
        return "FINISHED"
    return "KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED"


def all_current(graph: Graph, layout: Layout) -> bool:
    """Every node's output is intact and made from its current cache key (a
    run would skip them all)."""
    for name in graph.nodes:
        try:
            prep = prepare(graph, name, layout)
        except StageError:
            return False
        if not is_current(layout, prep.node, prep.key):
            return False
    return True


LOCKS = ".carp/locks"


@contextlib.contextmanager
def node_lock(layout: Layout, name: str):
    """One process at a time runs a given node of a working copy: an exclusive
    ``flock`` on ``.carp/locks/<node>.lock``, which the kernel releases when
    the holder exits, SIGKILL included (no stale lock). A second run of the
    same node (two ``carp run`` of one pipeline, ``carp stage`` beside a flow)
    says so and waits, then finds the output current or runs; a killed run's
    temp folders are cleaned only under the lock, so a live run's never are."""
    import fcntl

    path = layout.root / LOCKS / f"{name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            log.warning(
                "stage %s is being run by %s (lock %s): waiting for it to finish",
                name,
                holder,
                path,
            )
            fcntl.flock(f, fcntl.LOCK_EX)
        f.truncate(0)
        f.write(f"pid {os.getpid()}\n")
        f.flush()
        yield


def run_node(
    graph: Graph,
    name: str,
    layout: Layout,
    run: Any = NULL_RUN,
    force: bool = True,
) -> dict[str, Any]:
    """Prepare, execute in a temp folder and publish one node; return its manifest.

    ``run`` is the pipeline's lineage (:class:`pipelines.lineage.PipelineRun`,
    or ``NULL_RUN`` when tracking is off). With ``force=False`` an output made
    from the same cache key is kept and the stage is skipped (the Prefect path;
    DVC decides staleness itself). Holds the node's lock (:func:`node_lock`).
    """
    with node_lock(layout, name):
        return _run_node(graph, name, layout, run, force)


def _run_node(
    graph: Graph, name: str, layout: Layout, run: Any, force: bool
) -> dict[str, Any]:
    out = layout.out(name)
    clean_stale(out)
    clean_stale(layout.report(name))
    check_owner(graph, layout, [name])
    prep = prepare(graph, name, layout)
    if not force and is_current(layout, prep.node, prep.key):
        log.info("stage %s unchanged (cache key %s): skipped", name, prep.key)
        return read_manifest(out) or {}
    tags = stage_tags(prep, layout) if run.tracking else {}
    params = {
        f"{prep.node.stage}.{k}": v
        for k, v in prep.node.params.model_dump(mode="json").items()
    }
    stage = run.stage(name, tags, params)
    tmp = out.with_name(f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    t0 = time.time()
    try:
        result = execute(prep, layout, tmp, stage)
        manifest = json.loads((tmp / MANIFEST).read_text())
        publish(prep, layout, tmp, result)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        stage.end(ok=False, status=end_status(e))
        raise
    _log_outputs(stage, prep.node, out, result, manifest["fingerprint"])
    if result.summary:
        print(result.summary, flush=True)
    log.info(
        "stage %s done in %.1fs (fingerprint %s)",
        name,
        time.time() - t0,
        manifest["fingerprint"],
    )
    return manifest


def _log_outputs(
    stage: Any, node: Node, out: Path, result: StageResult, fingerprint: str
) -> None:
    stage.log_metrics(result.metrics)
    for rel in result.plots:
        stage.log_artifact(out / rel, "plots")
    for rel in result.reports:
        stage.log_artifact(out / rel, "reports")
    stage.log_artifact(out / "params.resolved.yaml", "")
    stage.log_artifact(out / MANIFEST, "")
    for rel in result.datasets:
        stage.log_dataset(out / rel, f"{node.name}/{rel}", "output")
    for field, ref in node.inputs.items():
        for r in ref if isinstance(ref, list) else [ref]:
            data = out.parent / r / "data.jsonl"
            artifact = (read_manifest(out.parent / r) or {}).get("artifact", [])
            if data.exists() and "dataset" in artifact:
                stage.log_dataset(data, f"{r}/data.jsonl", field)
    stage.set_tags(
        {
            "carp.output_fingerprint": fingerprint,
            "carp.output_path": str(out.resolve()),
        }
    )
    stage.end(ok=True)


def open_lineage(graph: Graph, layout: Layout, reuse: bool) -> Any:
    """Connect to MLflow and find or create this execution's parent run;
    return it as a :class:`pipelines.lineage.PipelineRun`.

    ``reuse=True`` (one process per stage, under DVC) finds the parent by
    declaration hash + git commit (+ DVC experiment); the Prefect flow opens a
    new parent for each flow run.
    """
    from pipelines.lineage import (
        Lineage,
        LineageError,
        git_commit,
        lineage_error,
        tracking_uri,
    )
    from pipelines.spec import check_tracking_uri

    hdr = graph.decl.header
    home = layout.home
    uri = tracking_uri(home, hdr.tracking_uri)
    try:
        check_tracking_uri(uri)
    except ValueError as e:
        raise LineageError(f"MLFLOW_TRACKING_URI: {e}") from None
    lineage = Lineage(home, hdr.experiment or f"carp-{hdr.pipeline}", uri)
    tags = {
        "carp.pipeline": hdr.pipeline,
        "carp.decl_hash": declaration_hash(graph.decl),
        "carp.git_commit": git_commit(home),
        "carp.runner": "dvc" if reuse else "prefect",  # part of the parent's name
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["carp.dvc_exp"] = os.environ["DVC_EXP_NAME"]
    try:
        return lineage.bind(lineage.parent(tags, reuse=reuse))
    except Exception as e:  # noqa: BLE001 - any backend failure, one message
        raise lineage_error(uri, e) from e
