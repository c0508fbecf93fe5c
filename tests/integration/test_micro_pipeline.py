"""End to end: the micro pipeline under `dvc repro` and under the Prefect flow.

Both paths must publish outputs with identical fingerprints, log one parent run
with a child per stage to MLflow, and DVC must re-run only what a changed param
touches.
"""

import json
import shutil
import subprocess
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
    # the world sets its own seed (same value): it must not follow the top level
    micro = micro.replace("    kind: world\n", "    kind: world\n    seed: 0\n")
    assert "    seed: 0\n" in micro
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


def test_top_level_seed_is_tracked(project):
    """The pipeline's `seed:` reaches exactly the stages that inherit it, under
    DVC and under `carp run`; `world` sets its own seed and stays clean."""
    proj, env = project
    sh(["dvc", "repro"], proj, env)
    assert dvc_stale(proj, env) == set()
    inherit = set(STAGES) - {"world"}
    params = proj / "params.yaml"
    original = params.read_text()
    assert "\nseed: 0\n" in original
    params.write_text(original.replace("\nseed: 0\n", "\nseed: 1\n"))
    try:
        compiled = sh(["carp", "compile", "params.yaml", "--check"], proj, env)
        assert "up to date" in compiled  # the same keys are tracked: no recompile
        assert dvc_stale(proj, env) == inherit
        out = sh(["carp", "run", "params.yaml"], proj, env)
        ran = {s for s in STAGES if f"stage {s} done in" in out}
        assert ran == inherit, out[-2000:]
        assert "stage world unchanged" in out
    finally:
        params.write_text(original)


def test_added_top_level_key_makes_dvc_stage_refuse(project):
    """A top-level default added after `carp compile` (here: `seed:` where the
    file had none) changes what DVC must track: `carp stage` under DVC refuses
    until dvc.yaml is recompiled, rather than letting DVC skip stale stages."""
    proj, env = project
    params = proj / "params.yaml"
    original = params.read_text()
    params.write_text(original.replace("\nseed: 0\n", "\n"))
    try:
        sh(["carp", "compile", "params.yaml"], proj, env)
        assert "- seed" not in (proj / "dvc.yaml").read_text()
        params.write_text(original.replace("\nseed: 0\n", "\nseed: 2\n"))
        res = subprocess.run(
            ["carp", "stage", "world"],
            cwd=proj,
            env={**env, "DVC_STAGE": "world"},
            capture_output=True,
            text=True,
        )
        assert res.returncode == 2
        assert "dvc.yaml is stale with params.yaml" in res.stderr
        assert "carp compile params.yaml" in res.stderr
    finally:
        params.write_text(original)
        sh(["carp", "compile", "params.yaml"], proj, env)
