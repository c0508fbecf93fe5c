"""The one MLflow wrapper every stage runs inside.

One parent run per pipeline execution, one child run per stage, linked with an
explicit ``mlflow.parentRunId`` (not ``nested=True``, which only sees a parent
opened in the same thread). Under ``dvc repro`` every stage is its own process:
the parent is found (or created) by declaration hash + git commit.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path
from typing import Any

PARENT_ENV = "CARP_PARENT_RUN_ID"
_BAD_KEY = re.compile(r"[^\w.\-/ :]")


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


class Lineage:
    """MLflow client bound to one experiment and one parent run."""

    def __init__(self, root: Path, experiment: str, uri: str) -> None:
        from mlflow.tracking import MlflowClient

        self.root = root
        self.uri = uri
        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            location = (root / "mlartifacts").resolve().as_uri()
            self.experiment_id = self.client.create_experiment(
                experiment, artifact_location=location
            )
        else:
            self.experiment_id = exp.experiment_id

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
            if found:
                return found[0].info.run_id
        run = self.client.create_run(
            self.experiment_id,
            tags={
                **tags,
                "carp.role": "parent",
                "mlflow.runName": tags.get("carp.pipeline", ""),
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
        """``mlflow.log_input`` for a JSONL dataset, referenced by its path."""
        import warnings

        import mlflow
        import pandas as pd

        df = pd.read_json(path, lines=True)
        mlflow.set_tracking_uri(self.uri)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # source-type and int-schema hints
            ds = mlflow.data.from_pandas(df, source=str(path.resolve()), name=name)
            with mlflow.start_run(run_id=run_id):
                mlflow.log_input(ds, context=context)

    def end(self, run_id: str, ok: bool) -> None:
        self.client.set_terminated(run_id, "FINISHED" if ok else "FAILED")


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
