"""Stage runtime: resolve inputs, run one node, write metadata, publish atomically.

Used by ``carp stage`` (what DVC calls) and by the Prefect flow alike, so both
compute the same fingerprints and write the same folders.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

from pipelines import __version__
from pipelines.contract import RunContext
from pipelines.graph import Graph, Node, cache_key, declaration_hash, folder_fingerprint
from pipelines.kinds import load_kind

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


def provides(kind: Any, node: Node) -> frozenset[str]:
    """Artifact kinds of a node's output (some depend on params, e.g. adapters)."""
    fn = getattr(kind, "provides", None)
    return frozenset(fn(node.params)) if fn else kind.PROVIDES


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


def run_node(
    graph: Graph,
    name: str,
    layout: Layout,
    lineage: Any = None,
    parent_id: str | None = None,
    force: bool = True,
) -> dict[str, Any]:
    """Run one node and publish ``artifacts/<name>``; return its manifest.

    With ``force=False`` an output made from the same cache key is kept and the
    stage is skipped (the Prefect path; DVC decides staleness itself).
    """
    node = graph.nodes[name]
    kind = load_kind(node.kind)
    inputs = input_folders(graph, node, layout)
    in_fps = input_fingerprints(inputs)
    key = cache_key(node, in_fps)
    out = layout.out(name)
    if not force and is_current(layout, node, key):
        log.info("stage %s unchanged (cache key %s): skipped", name, key)
        return read_manifest(out) or {}

    decl_hash = declaration_hash(graph.decl)
    tags = {
        "carp.stage": node.stage,
        "carp.node": name,
        "carp.kind": node.kind,
        "carp.method": node.params.method,
        "carp.cache_key": key,
        "carp.decl_hash": decl_hash,
    }
    tags.update(
        {
            f"carp.input.{k}": ",".join(v) if isinstance(v, list) else v
            for k, v in in_fps.items()
        }
    )
    run_id = None
    step_logger = None
    if lineage is not None and parent_id is not None:
        from pipelines.lineage import StepLogger, git_commit

        tags["carp.git_commit"] = git_commit(layout.home)
        exp_name = os.environ.get("DVC_EXP_NAME")
        if exp_name:
            tags["carp.dvc_exp"] = exp_name
        run_id = lineage.child(parent_id, name, tags)
        params = {
            f"{node.stage}.{k}": v
            for k, v in node.params.model_dump(mode="json").items()
        }
        lineage.log_params(run_id, params)
        step_logger = StepLogger(lineage, run_id)

    ckpt = None
    if getattr(kind, "RESUMABLE", False):
        ckpt = layout.checkpoint(name)
        ckpt.mkdir(parents=True, exist_ok=True)
    ctx = RunContext(
        seed=int(node.params.seed or 0),
        checkpoint_dir=ckpt,
        log_fn=step_logger,
        name=name,
    )
    tmp = out.with_name(f".tmp-{name}-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    t0 = time.time()
    try:
        result = kind.run(node.params, inputs, tmp, ctx)
        metrics = {k: float(v) for k, v in result.metrics.items()}
        metrics["stage_seconds"] = round(time.time() - t0, 3)
        (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True))
        (tmp / "params.resolved.yaml").write_text(
            yaml.safe_dump(
                {
                    "stage": node.stage,
                    "node": name,
                    "kind": node.kind,
                    "params": node.params.model_dump(mode="json"),
                    "inputs": node.inputs,
                },
                sort_keys=True,
            )
        )
        fingerprint = folder_fingerprint(tmp, [*result.plots, *result.reports])
        manifest = {
            "node": name,
            "stage": node.stage,
            "kind": node.kind,
            "method": node.params.method,
            "artifact": sorted(provides(kind, node)),
            "cache_key": key,
            "fingerprint": fingerprint,
            "inputs": in_fps,
            "input_nodes": node.inputs,
            "declaration": decl_hash,
            "versions": versions(),
            "plots": result.plots,
            "reports": result.reports,
            "datasets": result.datasets,
            **result.extra_manifest,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True))
        _publish(tmp, out)
        _write_report(layout, node, out, result.plots)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if run_id is not None:
            if step_logger is not None:
                step_logger.flush()
            lineage.end(run_id, ok=False)
        raise
    if run_id is not None:
        step_logger.flush()
        _log_outputs(lineage, run_id, node, out, result, metrics, fingerprint)
    if result.summary:
        print(result.summary, flush=True)
    log.info(
        "stage %s done in %.1fs (fingerprint %s)", name, time.time() - t0, fingerprint
    )
    return manifest


def _log_outputs(
    lineage: Any,
    run_id: str,
    node: Node,
    out: Path,
    result: Any,
    metrics: dict[str, float],
    fingerprint: str,
) -> None:
    lineage.log_metrics(run_id, metrics)
    for rel in result.plots:
        lineage.log_artifact(run_id, out / rel, "plots")
    for rel in result.reports:
        lineage.log_artifact(run_id, out / rel, "reports")
    lineage.log_artifact(run_id, out / "params.resolved.yaml", "")
    lineage.log_artifact(run_id, out / MANIFEST, "")
    for rel in result.datasets:
        lineage.log_dataset(run_id, out / rel, f"{node.name}/{rel}", "output")
    for field, ref in node.inputs.items():
        for r in ref if isinstance(ref, list) else [ref]:
            data = out.parent / r / "data.jsonl"
            if data.exists() and "dataset" in (read_manifest(out.parent / r) or {}).get(
                "artifact", []
            ):
                lineage.log_dataset(run_id, data, f"{r}/data.jsonl", field)
    lineage.set_tags(
        run_id,
        {
            "carp.output_fingerprint": fingerprint,
            "carp.output_path": str(out.resolve()),
        },
    )
    lineage.end(run_id, ok=True)


def open_lineage(
    graph: Graph, layout: Layout, reuse: bool, parent_id: str | None = None
) -> tuple[Any, str]:
    """Connect to MLflow and find or create this execution's parent run.

    ``reuse=True`` (one process per stage, under DVC) finds the parent by
    declaration hash + git commit (+ DVC experiment); the Prefect flow always
    opens a new parent for each flow run.
    """
    from pipelines.lineage import Lineage, git_commit, tracking_uri

    hdr = graph.decl.header
    home = layout.home
    lineage = Lineage(
        home,
        hdr.experiment or f"carp-{hdr.pipeline}",
        tracking_uri(home, hdr.tracking_uri),
    )
    tags = {
        "carp.pipeline": hdr.pipeline,
        "carp.decl_hash": declaration_hash(graph.decl),
        "carp.git_commit": git_commit(home),
    }
    if os.environ.get("DVC_EXP_NAME"):
        tags["carp.dvc_exp"] = os.environ["DVC_EXP_NAME"]
    if parent_id is not None:
        return lineage, parent_id
    return lineage, lineage.parent(tags, reuse=reuse)
