"""A throwaway carp project for end-to-end tests: the code copied (no
bytecode), a declaration as ``params.yaml``, ``.dvcignore`` and ``.gitignore``
as a real project has them, and the environment its commands run in."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GITIGNORE = (
    "/artifacts/\n/reports/\n/checkpoints/\n/mlflow.db\n/mlartifacts/\n/.prefect/\n"
)


def make_project(proj: Path, params_yaml: str) -> dict[str, str]:
    """Lay out a project in ``proj`` declared by ``params_yaml`` (its text);
    returns the environment to run git, dvc and carp in (offline, its own
    Prefect home, this interpreter's ``carp`` first on PATH, no MLflow URI)."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("pipelines", "stages", "flows"):
        shutil.copytree(ROOT / pkg, proj / pkg, ignore=ignore)
    (proj / "params.yaml").write_text(params_yaml)
    shutil.copy(ROOT / ".dvcignore", proj / ".dvcignore")
    (proj / ".gitignore").write_text(GITIGNORE)
    env = {
        **os.environ,
        "PYTHONPATH": str(proj),
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": str(proj / ".prefect"),
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def sh(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 1800) -> str:
    """Run ``args`` in the project; fail the test with its output unless it
    exits 0; return stdout + stderr."""
    res = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, (
        f"{args} failed:\n{res.stdout[-3000:]}\n{res.stderr[-3000:]}"
    )
    return res.stdout + res.stderr


def dvc_status(proj: Path, env: dict[str, str]) -> dict:
    """``dvc status --json``: stale stages and what changed ({} when clean).
    Only stdout is JSON; DVC's warnings go to stderr."""
    res = subprocess.run(
        ["dvc", "status", "--json"], cwd=proj, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout or "{}")
