"""The one MLflow wrapper every stage runs inside.

One parent run per pipeline execution, one child run per stage, linked with an
explicit ``mlflow.parentRunId`` (not ``nested=True``, which only sees a parent
opened in the same thread). Under ``dvc repro`` every stage is its own process:
the parent is found (or created) by declaration hash + git commit, set RUNNING
again, and ended by that stage (FINISHED, FAILED, or KILLED when interrupted),
so it never stays RUNNING after the last stage.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

PARENT_ENV = "CARP_PARENT_RUN_ID"
_BAD_KEY = re.compile(r"[^\w.\-/ :]")
# MLflow 3 opens an experiment tagged so in its model-training view (runs table,
# charts, compare), not the GenAI "Traces" page
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
# stage metrics the parent run carries too, so the runs table compares
# pipelines: an evaluated model's headline numbers (``<model>/em/mean``, ...;
# not the paired differences ``<b>-vs-<a>/...``)
HEADLINE = re.compile(
    r"^(?![^/]*-vs-)[^/]+/(em/mean|em_seen|em_unseen|ppl_answer|ppl|word_perplexity|"
    r"bits_per_byte|mc/acc|mc/acc_norm)$"
)


def parent_name(tags: dict[str, str]) -> str:
    """``<pipeline> · <runner> · <DVC experiment or git commit>``."""
    where = tags.get("carp.dvc_exp") or tags.get("carp.git_commit", "")[:8]
    parts = [tags.get("carp.pipeline", ""), tags.get("carp.runner", ""), where]
    return " · ".join(p for p in parts if p)


def mlflow_key(key: str) -> str:
    """MLflow keys allow ``[\\w.-/ :]``; variant names carry '@'."""
    return _BAD_KEY.sub(":", key)[:250]


def tracking_uri(root: Path, declared: str | None) -> str:
    """``MLFLOW_TRACKING_URI`` > the declaration's ``tracking_uri`` > root/mlflow.db."""
    env = os.environ.get("MLFLOW_TRACKING_URI")
    if env:
        return env
    if declared:
        return declared
    return f"sqlite:///{(root / 'mlflow.db').resolve()}"


def lineage_error(uri: str, e: BaseException) -> LineageError:
    first = (str(e).strip().splitlines() or [""])[0][:300]
    return LineageError(
        f"MLflow at {uri} failed: {type(e).__name__}: {first}; check that the "
        "store is reachable and writable (for sqlite, the database file and its "
        "folder), fix `tracking_uri` / MLFLOW_TRACKING_URI, or run with --no-track"
    )


def git_commit(root: Path) -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


class LineageError(RuntimeError):
    """MLflow could not be reached or written; the message says how to fix it."""


PROBE_SECONDS = 3.0


def probe(uri: str) -> None:
    """Fail in seconds, not minutes, when a tracking server is not there.

    MLflow retries HTTP calls with back-off for minutes; a TCP connect with a
    short timeout first, and short request timeouts afterwards, keep a wrong
    URI from looking like a hang."""
    import socket
    from urllib.parse import urlsplit

    parts = urlsplit(uri)
    if parts.scheme not in ("http", "https"):
        return
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "20")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), PROBE_SECONDS):
            pass
    except OSError as e:
        raise LineageError(
            f"MLflow tracking server {uri} is not reachable ({e}); start it, fix "
            "`tracking_uri` / MLFLOW_TRACKING_URI, or run with --no-track"
        ) from None


class Lineage:
    """MLflow client bound to one experiment and one parent run."""

    def __init__(self, root: Path, experiment: str, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.root = root
        self.uri = uri
        self.experiment = experiment
        probe(uri)
        try:
            self.client = MlflowClient(tracking_uri=uri)
            exp = self.client.get_experiment_by_name(experiment)
            if exp is None:  # a server stores artifacts where it is told to
                remote = uri.startswith(("http://", "https://"))
                location = None if remote else (root / "mlartifacts").resolve().as_uri()
                self.experiment_id = self.client.create_experiment(
                    experiment, artifact_location=location, tags=EXPERIMENT_KIND
                )
            else:
                self.experiment_id = exp.experiment_id
                for k, v in EXPERIMENT_KIND.items():
                    if exp.tags.get(k) != v:
                        self.client.set_experiment_tag(self.experiment_id, k, v)
        except LineageError:
            raise
        except Exception as e:  # noqa: BLE001 - any backend failure, one message
            raise lineage_error(uri, e) from e

    def parent(self, tags: dict[str, str], reuse: bool) -> str:
        """Find the parent run matching ``tags`` (when ``reuse``) or create one."""
        env = os.environ.get(PARENT_ENV)
        if env:
            return env
        if reuse:
            filt = " and ".join(f"tags.`{k}` = '{v}'" for k, v in tags.items())
            found = self.client.search_runs(
                [self.experiment_id],
                filter_string=filt + " and tags.`carp.role` = 'parent'",
                max_results=1,
                order_by=["attributes.start_time DESC"],
            )
            if found:  # reopened: this stage ends it again (see PipelineRun.end)
                self.client.update_run(found[0].info.run_id, status="RUNNING")
                return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            tags={
                **tags,
                "carp.role": "parent",
                "mlflow.runName": parent_name(tags),
            },
        )
        return run.info.run_id

    def child(self, parent_id: str, name: str, tags: dict[str, str]) -> str:
        run = self.client.create_run(
            self.experiment_id,
            run_name=name,
            tags={**tags, "mlflow.parentRunId": parent_id, "carp.role": "stage"},
        )
        return run.info.run_id

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        items = [Param(mlflow_key(k), str(v)[:6000]) for k, v in params.items()]
        for i in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[i : i + 100])

    def log_metrics(
        self, run_id: str, metrics: dict[str, float], step: int = 0
    ) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        items = [Metric(mlflow_key(k), float(v), now, step) for k, v in metrics.items()]
        for i in range(0, len(items), 1000):
            self.client.log_batch(run_id, metrics=items[i : i + 1000])

    def set_tags(self, run_id: str, tags: dict[str, str]) -> None:
        from mlflow.entities import RunTag

        self.client.log_batch(
            run_id, tags=[RunTag(mlflow_key(k), str(v)) for k, v in tags.items()]
        )

    def log_artifact(self, run_id: str, path: Path, artifact_path: str) -> None:
        self.client.log_artifact(run_id, str(path), artifact_path=artifact_path)

    def log_dataset(self, run_id: str, path: Path, name: str, context: str) -> None:
        """``log_input`` for a JSONL dataset, referenced by its path (through the
        client, not the fluent API, so concurrent stages do not share state):
        digest = the content hash of its ``dataset.json`` (else of the file),
        schema from the first rows, and tags ``carp.rows``, ``carp.shape`` and
        ``carp.source``. The file is streamed, never read whole."""
        import warnings

        from mlflow.entities import DatasetInput, InputTag

        meta = dataset_meta(path)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # source-type and int-schema hints
            entity = _meta_dataset(path, name, meta)._to_mlflow_entity()
        tags = [InputTag(key="mlflow.data.context", value=context)]
        for key in ("rows", "shape", "source"):
            if meta.get(key) is not None:
                tags.append(InputTag(key=f"carp.{key}", value=str(meta[key])[:500]))
        self.client.log_inputs(run_id, [DatasetInput(dataset=entity, tags=tags)])

    def end(self, run_id: str, ok: bool, status: str | None = None) -> None:
        """FINISHED / FAILED, or ``status`` (KILLED for an interrupted run)."""
        self.client.set_terminated(run_id, status or ("FINISHED" if ok else "FAILED"))

    def bind(self, parent_id: str) -> PipelineRun:
        return PipelineRun(self, parent_id)


class PipelineRun:
    """The lineage of one pipeline execution: a parent run and its stage runs.

    Pickles as (root, experiment, tracking URI, parent id), so a worker process
    reconnects to the same parent run."""

    tracking = True

    def __init__(self, lineage: Lineage, parent_id: str) -> None:
        self.lineage = lineage
        self.parent_id = parent_id

    def __getstate__(self) -> dict[str, Any]:
        lin = self.lineage
        return {
            "root": lin.root,
            "experiment": lin.experiment,
            "uri": lin.uri,
            "parent_id": self.parent_id,
        }

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.lineage = Lineage(state["root"], state["experiment"], state["uri"])
        self.parent_id = state["parent_id"]

    def stage(
        self, name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> StageRun:
        """Open the child run of stage ``name`` with its tags and params; the
        parent gets the params too, keyed by node (``select@random-s1.budget``)
        so the variants of a swept stage do not collide."""
        run_id = self.lineage.child(self.parent_id, name, tags)
        self.lineage.log_params(run_id, params)
        by_node = {f"{name}.{k.partition('.')[2]}": v for k, v in params.items()}
        self.lineage.log_params(self.parent_id, by_node)
        return StageRun(self.lineage, run_id, self.parent_id)

    def end(self, ok: bool, status: str | None = None) -> None:
        self.lineage.end(self.parent_id, ok, status)


class StageRun:
    """One stage's child run: step metrics (buffered), outputs, final state."""

    def __init__(
        self, lineage: Lineage, run_id: str, parent_id: str | None = None
    ) -> None:
        self.lineage = lineage
        self.run_id = run_id
        self.parent_id = parent_id
        self.steps = StepLogger(lineage, run_id)

    def log_step(self, metrics: dict[str, float], step: int) -> None:
        self.steps(metrics, step)

    def log_metrics(self, metrics: dict[str, float]) -> None:
        """The stage's metrics; the headline ones also on the parent run."""
        self.steps.flush()
        self.lineage.log_metrics(self.run_id, metrics)
        top = {k: v for k, v in metrics.items() if HEADLINE.match(k)}
        if top and self.parent_id is not None:
            self.lineage.log_metrics(self.parent_id, top)

    def log_artifact(self, path: Path, artifact_path: str) -> None:
        self.lineage.log_artifact(self.run_id, path, artifact_path)

    def log_dataset(self, path: Path, name: str, context: str) -> None:
        self.lineage.log_dataset(self.run_id, path, name, context)

    def set_tags(self, tags: dict[str, str]) -> None:
        self.lineage.set_tags(self.run_id, tags)

    def end(self, ok: bool, status: str | None = None) -> None:
        self.steps.flush()
        self.lineage.end(self.run_id, ok, status)


class NullStageRun:
    """Stage lineage when tracking is off: every call does nothing."""

    def log_step(self, metrics: dict[str, float], step: int) -> None: ...

    def log_metrics(self, metrics: dict[str, float]) -> None: ...

    def log_artifact(self, path: Path, artifact_path: str) -> None: ...

    def log_dataset(self, path: Path, name: str, context: str) -> None: ...

    def set_tags(self, tags: dict[str, str]) -> None: ...

    def end(self, ok: bool, status: str | None = None) -> None: ...


class NullRun:
    """Pipeline lineage when tracking is off."""

    tracking = False
    parent_id: str | None = None

    def stage(
        self, name: str, tags: dict[str, str], params: dict[str, Any]
    ) -> NullStageRun:
        return NullStageRun()

    def end(self, ok: bool, status: str | None = None) -> None: ...


NULL_RUN = NullRun()


class StepLogger:
    """Buffers per-step metrics and sends them in batches (one call per ~500)."""

    def __init__(self, lineage: Lineage, run_id: str, flush_every: int = 500) -> None:
        self.lineage, self.run_id, self.flush_every = lineage, run_id, flush_every
        self.buffer: list[Any] = []

    def __call__(self, metrics: dict[str, float], step: int) -> None:
        import time

        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.buffer += [Metric(mlflow_key(k), v, now, step) for k, v in metrics.items()]
        if len(self.buffer) >= self.flush_every:
            self.flush()

    def flush(self) -> None:
        while self.buffer:
            chunk, self.buffer = self.buffer[:1000], self.buffer[1000:]
            self.lineage.client.log_batch(self.run_id, metrics=chunk)


SCHEMA_ROWS = 200  # rows read to infer a logged dataset's schema


def dataset_meta(path: Path) -> dict[str, Any]:
    """digest, rows, shape and source of a dataset's ``data.jsonl``, from the
    ``dataset.json`` beside it where there is one (else hashed and counted)."""
    import hashlib
    import json

    info: dict[str, Any] = {}
    meta_file = Path(path).with_name("dataset.json")
    if meta_file.is_file():
        try:
            info = json.loads(meta_file.read_text())
        except ValueError:
            info = {}
    digest, rows = info.get("sha256"), info.get("count")
    if digest is None or rows is None:
        h, rows = hashlib.sha256(), 0
        with open(path, "rb") as f:
            for line in f:
                h.update(line)
                rows += bool(line.strip())
        digest = h.hexdigest()
    return {
        "digest": str(digest)[:16],
        "rows": rows,
        "shape": info.get("shape") or "instruction",
        "source": info.get("source"),
    }


def _meta_dataset(path: Path, name: str, meta: dict[str, Any]) -> Any:
    import itertools
    import json

    import pandas as pd
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.utils import _infer_schema

    with open(path, encoding="utf-8") as f:
        head = [json.loads(x) for x in itertools.islice(f, SCHEMA_ROWS) if x.strip()]
    schema = None
    if head:
        # nested fields (messages) as JSON text: the schema names every column
        frame = pd.DataFrame(head).map(
            lambda v: v if isinstance(v, str | int | float | bool) else json.dumps(v)
        )
        schema = _infer_schema(frame)
    source = resolve_dataset_source(str(Path(path).resolve()))
    return MetaDataset(source=source, name=name, digest=meta["digest"], schema=schema)
