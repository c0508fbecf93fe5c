"""carp against an MLflow tracking server (`mlflow server` on 127.0.0.1, sqlite
backend, artifacts proxied to `--artifacts-destination`): the micro pipeline
records the same lineage as in the embedded store — same runs, params, dataset
inputs and fingerprint tags — and its artifacts land in the server's folder.

Each store gets one execution of the micro pipeline in one process: `carp
stage NODE` for every node, in order, through carp's CLI entry point (the same
code path as six `carp stage` commands under DVC, without six imports of
torch, transformers and MLflow, which were most of this test's time)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.project import ROOT, make_project
from tests.integration.servers import free_port, server, wait_http
from tests.integration.test_micro_pipeline import STAGES

# the nodes named in argv as `carp stage NODE --file params.yaml`, in order,
# stopping at the first failure
STAGE_ALL = (
    "import sys; from pipelines.cli import main; "
    "sys.exit(next((rc for n in sys.argv[1:] "
    "if (rc := main(['stage', n, '--file', 'params.yaml']))), 0))"
)
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(1800)]


def run_micro(proj: Path, env: dict[str, str]) -> None:
    res = subprocess.run(
        [sys.executable, "-c", STAGE_ALL, *STAGES],
        cwd=proj,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert res.returncode == 0, res.stderr[-3000:]


def local_artifacts(proj: Path) -> list[str]:
    return sorted(str(p) for p in (proj / "mlartifacts").rglob("*") if p.is_file())


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


def test_server_lineage_equals_embedded(tmp_path):
    proj = tmp_path / "proj"
    proj.mkdir()
    micro = (ROOT / "pipelines" / "presets" / "micro.yaml").read_text()
    env = make_project(proj, micro)
    for git in (["init", "-q"], ["add", "-A"], ["commit", "-qm", "micro"]):
        subprocess.run(["git", *git], cwd=proj, env=env, check=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    store = tmp_path / "mlflow-server"
    store.mkdir()
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
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
    # the server starts while the embedded execution runs
    with server(argv, None, tmp_path / "mlflow.log", env, tmp_path) as proc:
        run_micro(proj, env)  # embedded store: mlflow.db in the project
        embedded = lineage(f"sqlite:///{proj / 'mlflow.db'}")
        before = local_artifacts(proj)
        assert before, "the embedded store keeps artifacts in the project"

        wait_http(f"{url}/health", proc, tmp_path / "mlflow.log", 600)
        run_micro(proj, {**env, "MLFLOW_TRACKING_URI": url})
        served = lineage(url)
    assert sorted(served) == sorted(STAGES) == sorted(embedded)
    for s in STAGES:
        assert served[s] == embedded[s], s
    assert embedded["select"]["inputs"], "datasets were logged"
    assert embedded["eval"]["tags"]["carp.git_commit"] != "unknown"
    proxied = {p.name for p in (store / "artifacts").rglob("*") if p.is_file()}
    assert {"params.resolved.yaml", "carp.json"} <= proxied, proxied
    assert local_artifacts(proj) == before, "the server run wrote into the project"
