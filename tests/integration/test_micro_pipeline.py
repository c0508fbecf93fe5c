"""End to end: the micro pipeline under `dvc repro` and under the Prefect flow.

Both paths must publish outputs with identical fingerprints, log one parent run
with a child per stage to MLflow, and DVC must re-run only what a changed param
touches.
"""

import json
import shutil
from pathlib import Path

import pytest

from tests.integration.project import dvc_status, make_project, sh

ROOT = Path(__file__).resolve().parents[2]
STAGES = ["world", "base", "prune", "select", "recover", "eval"]
pytestmark = pytest.mark.integration


def fingerprints(project):
    return {
        s: json.loads((project / "artifacts" / s / "carp.json").read_text())[
            "fingerprint"
        ]
        for s in STAGES
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A fresh carp project (code copied, git + dvc initialised) on micro.yaml."""
    proj = tmp_path_factory.mktemp("proj")
    micro = (ROOT / "pipelines" / "presets" / "micro.yaml").read_text()
    env = make_project(proj, micro)
    env["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # as users run it: bytecode written
    sh(["git", "init", "-q"], proj, env)
    sh(["dvc", "init", "-q"], proj, env)
    sh(["carp", "compile", "params.yaml"], proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "micro"], proj, env)
    return proj, env


def test_dvc_and_prefect_agree(project):
    from mlflow.tracking import MlflowClient

    proj, env = project
    out = sh(["dvc", "repro"], proj, env)
    for s in STAGES:
        assert f"Running stage '{s}'" in out
    via_dvc = fingerprints(proj)

    again = sh(["dvc", "repro"], proj, env)
    assert "Running stage" not in again  # nothing changed, nothing re-runs

    shutil.rmtree(proj / "artifacts")
    sh(["carp", "run", "params.yaml"], proj, env)
    assert fingerprints(proj) == via_dvc

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("carp-micro")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    assert len(parents) == 2  # one for the DVC execution, one for the flow run
    for parent in parents:
        kids = [
            r
            for r in runs
            if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id
        ]
        assert sorted(k.info.run_name for k in kids) == sorted(STAGES)
        for k in kids:
            assert k.data.tags["carp.output_fingerprint"] == via_dvc[k.info.run_name]
        assert parent.data.tags["carp.git_commit"] != "unknown"


def test_dvc_experiment_reruns_only_downstream(project):
    proj, env = project
    sh(["dvc", "repro"], proj, env)
    before = fingerprints(proj)
    out = sh(["dvc", "exp", "run", "-S", "stages.prune.sparsity=0.6"], proj, env)
    ran = {s for s in STAGES if f"Running stage '{s}'" in out}
    assert ran == {"prune", "recover", "eval"}  # select reads the pool, not prune
    after = fingerprints(proj)
    assert after["base"] == before["base"] and after["prune"] != before["prune"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{proj / 'mlflow.db'}")
    exp = client.get_experiment_by_name("carp-micro")
    tagged = client.search_runs(
        [exp.experiment_id], "tags.`carp.dvc_exp` != '' and tags.`carp.role` = 'stage'"
    )
    assert sorted(r.info.run_name for r in tagged) == ["eval", "prune", "recover"]


def dvc_stale(proj, env):
    return set(dvc_status(proj, env))


def touch_code(path):
    """Append a comment: a code change that leaves every output the same."""
    original = path.read_text()
    path.write_text(original + "\n# edited\n")
    return original


def test_code_identity_is_exact(project):
    proj, env = project
    sh(["dvc", "repro"], proj, env)
    assert list((proj / "stages").rglob("__pycache__")), "bytecode was not written"
    assert dvc_stale(proj, env) == set()
    again = sh(["dvc", "repro"], proj, env)
    assert "Running stage" not in again

    prune_only = proj / "stages" / "prune" / "magnitude.py"
    original = touch_code(prune_only)
    try:
        assert dvc_stale(proj, env) == {"prune"}
        out = sh(["dvc", "repro"], proj, env)
        ran = {s for s in STAGES if f"Running stage '{s}'" in out}
        # prune and what it feeds (its manifest records the new cache key)
        assert "prune" in ran and ran <= {"prune", "recover", "eval"}
    finally:
        prune_only.write_text(original)
    sh(["dvc", "repro"], proj, env)

    runtime = proj / "stages" / "common" / "train" / "loop.py"
    original = touch_code(runtime)
    try:
        assert dvc_stale(proj, env) == {"recover"}
    finally:
        runtime.write_text(original)
    assert dvc_stale(proj, env) == set()
