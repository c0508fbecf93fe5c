"""DVC remote: the micro pipeline's outputs pushed to a local-directory remote
come back on a fresh clone with `dvc pull`, bit for bit, and `dvc repro` then
has nothing to do (the same holds for s3://, gs://, ssh:// remotes; README)."""

from __future__ import annotations

import subprocess

import pytest

from tests.integration.test_micro_pipeline import (  # noqa: F401  (fixture)
    STAGES,
    fingerprints,
    project,
    sh,
)

# this CPU-starved machine: a micro run can take 15 min
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]


def test_push_then_pull_on_a_fresh_clone(project, tmp_path):  # noqa: F811
    proj, env = project
    sh(["dvc", "repro"], proj, env, timeout=3000)
    made = fingerprints(proj)
    remote = tmp_path / "remote"
    sh(["dvc", "remote", "add", "-d", "store", str(remote)], proj, env)
    sh(["git", "add", "dvc.lock", ".dvc/config"], proj, env)
    sh(["git", "commit", "-qm", "outputs in the store"], proj, env)
    pushed = sh(["dvc", "push"], proj, env)
    assert "pushed" in pushed and any(remote.rglob("*")), pushed

    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(proj), str(clone)], tmp_path, env)
    cenv = {**env, "PYTHONPATH": str(clone)}
    assert not (clone / "artifacts").exists()
    sh(["dvc", "pull"], clone, cenv)
    assert fingerprints(clone) == made
    for s in STAGES:  # every output folder is back, manifest and all
        assert (clone / "artifacts" / s / "carp.json").is_file()
    status = subprocess.run(
        ["dvc", "status"], cwd=clone, env=cenv, capture_output=True, text=True
    )
    assert "up to date" in status.stdout, status.stdout + status.stderr
    again = sh(["dvc", "repro"], clone, cenv, timeout=3000)
    assert "Running stage" not in again, again
