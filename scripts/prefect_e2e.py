"""Prefect for real, end to end: a local `prefect server start` (127.0.0.1), a
process work pool and a worker, `carp deploy` of a declaration (with an
override and the recover kind routed to a second pool with its own worker),
one triggered flow run, waited for; then the MLflow parent run and the outputs
are checked, and everything started here is stopped.

    .venv/bin/python scripts/prefect_e2e.py [--project DIR] [--file FILE]

The project (default: a copy of this checkout on pipelines/presets/micro.yaml in
a temporary folder) must be a git checkout; the slow test
tests/integration/test_prefect_deploy.py calls :func:`run_e2e`.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.servers import free_port, server  # noqa: E402

BIN = Path(sys.executable).parent


def _sh(argv: list[str], cwd: Path, env: dict[str, str], timeout: float = 600) -> str:
    res = subprocess.run(
        argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    if res.returncode != 0:
        raise RuntimeError(
            f"{argv} exited {res.returncode}:\n{res.stdout}\n{res.stderr}"
        )
    return res.stdout + res.stderr


def make_project(dest: Path, file: str = "pipelines/presets/micro.yaml") -> Path:
    """A git checkout of this project's code with ``file`` as params.yaml."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for pkg in ("pipelines", "stages", "flows"):
        shutil.copytree(ROOT / pkg, dest / pkg, ignore=ignore)
    shutil.copy(ROOT / file, dest / "params.yaml")
    (dest / ".gitignore").write_text(
        "/artifacts/\n/reports/\n/checkpoints/\n/mlflow.db\n/mlartifacts/\n"
    )
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }
    _sh(["git", "init", "-q"], dest, env)
    _sh(["git", "add", "-A"], dest, env)
    _sh(["git", "commit", "-qm", "e2e"], dest, env)
    return dest


def run_e2e(project: Path, work: Path, timeout: float = 2400) -> dict:
    """Server, pools, workers, deploy, trigger, wait; return what was seen."""
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}",
        "PYTHONPATH": str(project),
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_API_URL": api,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_SCHEDULER_ENABLED": "false",  # only our trigger
        "PREFECT_WORKER_QUERY_SECONDS": "2",
        "HF_HUB_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    prefect = str(BIN / "prefect")
    started = time.monotonic()
    out: dict = {}
    srv = [prefect, "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    with server(srv, f"{api}/health", work / "server.log", env, work, timeout=900):
        out["server_up_s"] = round(time.monotonic() - started, 1)
        for pool in ("carp-e2e", "carp-e2e-gpu"):
            _sh([prefect, "work-pool", "create", pool, "--type", "process"], work, env)
        _sh(
            [prefect, "concurrency-limit", "create", "carp-kind-recover", "1"],
            work,
            env,
        )
        out["deploy"] = _sh(
            [
                str(BIN / "carp"),
                "deploy",
                "params.yaml",
                "--pool",
                "carp-e2e",
                "--cron",
                "0 3 * * *",
                "--name",
                "e2e",
                "--set",
                "stages.prune.sparsity=0.4",
                "--route",
                "recover=carp-e2e-gpu",
            ],
            project,
            env,
        )
        workers = [
            [prefect, "worker", "start", "--pool", p, "--type", "process"]
            for p in ("carp-e2e", "carp-e2e-gpu")
        ]
        with (
            server(workers[0], None, work / "worker.log", env, project),
            server(workers[1], None, work / "worker-gpu.log", env, project),
        ):
            t0 = time.monotonic()
            out["run"] = _sh(
                [
                    prefect,
                    "deployment",
                    "run",
                    "carp-pipeline/e2e",
                    "--watch",
                    "--watch-timeout",
                    str(int(timeout)),
                    "--watch-interval",
                    "5",
                ],
                work,
                env,
                timeout=timeout + 60,
            )
            out["flow_run_s"] = round(time.monotonic() - t0, 1)
            out["node_runs"] = _sh(  # wide: rich would cut the run names
                [prefect, "flow-run", "ls", "--flow-name", "carp-node", "--limit", "5"],
                work,
                {**env, "COLUMNS": "250"},
            )
    out["total_s"] = round(time.monotonic() - started, 1)
    return out


def check(project: Path) -> dict:
    """The MLflow parent run and child runs, the outputs and the override."""
    import yaml
    from mlflow.tracking import MlflowClient

    from pipelines.graph import build
    from pipelines.spec import validate

    decl = yaml.safe_load((project / "params.yaml").read_text())
    stages = list(build(validate(decl)).nodes)
    client = MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    exp = client.get_experiment_by_name(f"carp-{decl['pipeline']}")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    kids = [r for r in runs if r.data.tags.get("carp.role") == "stage"]
    resolved = yaml.safe_load(
        (project / "artifacts/prune/params.resolved.yaml").read_text()
    )
    return {
        "parents": [(p.info.status, p.data.tags.get("carp.pipeline")) for p in parents],
        "children": sorted(k.info.run_name for k in kids),
        "children_share_parent": {k.data.tags.get("mlflow.parentRunId") for k in kids}
        == {p.info.run_id for p in parents},
        "stages": stages,
        "outputs": {
            s: (project / "artifacts" / s / "carp.json").is_file() for s in stages
        },
        "prune_sparsity": resolved["params"]["sparsity"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--project", type=Path, default=None)
    ap.add_argument("--file", default="pipelines/presets/micro.yaml")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="carp-prefect-e2e-") as tmp:
        work = Path(tmp)
        project = args.project or make_project(work / "project", args.file)
        seen = run_e2e(project.resolve(), work)
        print(seen["run"][-2000:])
        result = check(project)
        print(json.dumps({k: v for k, v in seen.items() if k.endswith("_s")}))
        print(json.dumps(result, indent=1))
        ok = all(result["outputs"].values()) and result["children_share_parent"]
        return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
