"""carp against an MLflow tracking server (`mlflow server` on 127.0.0.1, sqlite
backend, artifacts proxied to `--artifacts-destination`): the micro pipeline
records the same lineage as in the embedded store — same runs, params, dataset
inputs and fingerprint tags — and its artifacts land in the server's folder."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.integration.servers import free_port, server
from tests.integration.test_micro_pipeline import (  # noqa: F401  (fixture)
    STAGES,
    project,
    sh,
)

# this CPU-starved machine: a micro run can take 15 min
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]


def lineage(uri: str) -> dict[str, dict]:
    """Per stage run: params, carp tags, dataset inputs (name, digest, context)."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("carp-micro")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    assert len(parents) == 1, [r.info.run_id for r in parents]
    out = {}
    for r in runs:
        if r.data.tags.get("mlflow.parentRunId") != parents[0].info.run_id:
            continue
        out[r.info.run_name] = {
            "params": r.data.params,
            "tags": {
                k: v
                for k, v in r.data.tags.items()
                if k.startswith("carp.") and k != "carp.run_started"
            },
            "inputs": sorted(
                (d.dataset.name, d.dataset.digest, t.value)
                for d in r.inputs.dataset_inputs
                for t in d.tags
            ),
        }
    return out


def test_server_lineage_equals_embedded(project, tmp_path):  # noqa: F811
    proj, env = project
    for s in STAGES:  # embedded store: mlflow.db in the project
        sh(["carp", "stage", s, "--file", "params.yaml"], proj, env)
    embedded = lineage(f"sqlite:///{proj / 'mlflow.db'}")

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "mlflow-server"
    store.mkdir()
    mlflow = str(Path(sys.executable).parent / "mlflow")
    argv = [
        mlflow,
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--backend-store-uri",
        f"sqlite:///{store / 'server.db'}",
        "--artifacts-destination",
        str(store / "artifacts"),
        "--workers",
        "1",
    ]
    with server(
        argv, f"{url}/health", tmp_path / "mlflow.log", env, tmp_path, timeout=600
    ):
        senv = {**env, "MLFLOW_TRACKING_URI": url}
        for s in STAGES:
            sh(["carp", "stage", s, "--file", "params.yaml"], proj, senv)
        served = lineage(url)
    assert sorted(served) == sorted(STAGES) == sorted(embedded)
    for s in STAGES:
        assert served[s] == embedded[s], s
    assert embedded["select"]["inputs"], "datasets were logged"
    proxied = {p.name for p in (store / "artifacts").rglob("*") if p.is_file()}
    assert {"params.resolved.yaml", "carp.json"} <= proxied, proxied
