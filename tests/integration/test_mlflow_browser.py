"""The MLflow UI in a real browser: two runs of the micro pipeline (the second
with another pruning sparsity, committed in between), `mlflow ui` on 127.0.0.1
and headless Chromium (Debian's `chromium`) on the experiment page and on a
comparison of the two evaluate runs. Screenshots go to reports/ of the checkout
(`reports/mlflow-experiment.png`, `reports/mlflow-compare.png`).

    .venv/bin/pytest -m slow tests/integration/test_mlflow_browser.py
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.servers import free_port, server

ROOT = Path(__file__).resolve().parents[2]
# two pipeline runs, a UI start and four browser loads: minutes on a busy CPU
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if path := shutil.which(name):
            return path
    pytest.skip("no Chromium: apt-get install -y chromium")


def sh(args: list[str], cwd: Path, env: dict[str, str], timeout: int = 1200) -> str:
    res = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, f"{args}:\n{res.stdout[-2000:]}\n{res.stderr[-2000:]}"
    return res.stdout


def browse(url: str, png: Path, profile: Path) -> str:
    """The page's DOM after its scripts ran; a screenshot of it to ``png``."""
    base = [
        chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--window-size=1600,1000",
        "--virtual-time-budget=30000",  # lets the single-page app fetch and draw
    ]
    run = dict(capture_output=True, text=True, timeout=300)
    shot = [*base, f"--user-data-dir={profile}-shot", f"--screenshot={png}", url]
    subprocess.run(shot, check=True, **run)
    dump = [*base, f"--user-data-dir={profile}-dom", "--dump-dom", url]
    return subprocess.run(dump, check=True, **run).stdout


def test_experiment_and_compare_view_show_named_runs_and_headline_metrics(
    tmp_path,
):
    proj = tmp_path / "proj"
    for pkg in ("pipelines", "stages", "flows"):
        shutil.copytree(
            ROOT / pkg, proj / pkg, ignore=shutil.ignore_patterns("__pycache__")
        )
    decl = (ROOT / "pipelines" / "presets" / "micro.yaml").read_text()
    (proj / "params.yaml").write_text(decl)
    (proj / ".gitignore").write_text("artifacts/\ncheckpoints/\nreports/\nml*\n")
    env = {**os.environ, "PYTHONPATH": str(proj), "HF_HUB_OFFLINE": "1"}
    env["PATH"] = f"{Path(sys.executable).parent}:{env['PATH']}"
    env.pop("MLFLOW_TRACKING_URI", None)
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t"]
    sh(["git", "init", "-q"], proj, env)
    sh([*git, "add", "-A"], proj, env)
    sh([*git, "commit", "-qm", "sparsity 0.5"], proj, env)
    carp = [sys.executable, "-m", "pipelines.cli", "run", "params.yaml"]
    sh(carp, proj, env)
    (proj / "params.yaml").write_text(decl.replace("sparsity: 0.5", "sparsity: 0.3"))
    sh([*git, "commit", "-qam", "sparsity 0.3"], proj, env)
    sh(carp, proj, env)

    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{proj / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("carp-micro")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    evals = [r for r in runs if r.info.run_name == "eval"]
    names = sorted(p.info.run_name for p in parents)
    assert len(parents) == 2 and len(set(names)) == 2  # distinct names
    assert all(p.info.status == "FINISHED" for p in parents)
    assert all("recover/em/mean" in p.data.metrics for p in parents)
    assert {p.data.params["prune.sparsity"] for p in parents} == {"0.5", "0.3"}

    port = free_port()
    argv = [
        str(Path(sys.executable).parent / "mlflow"),
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",  # no worker supervisor that restarts slow workers on a busy machine
    ]
    home = f"http://127.0.0.1:{port}"
    out = ROOT / "reports"
    out.mkdir(exist_ok=True)
    profile = tmp_path / "chromium"
    log = tmp_path / "mlflow.log"
    with server(argv, f"{home}/health", log, env, proj, timeout=600):
        page = browse(
            f"{home}/#/experiments/{exp.experiment_id}/runs",
            out / "mlflow-experiment.png",
            profile,
        )
        ids = json.dumps([r.info.run_id for r in evals])
        compare = browse(
            f"{home}/#/compare-runs?runs={ids}&experiments="
            f"{json.dumps([exp.experiment_id])}",
            out / "mlflow-compare.png",
            profile,
        )
    for name in names:  # the runs table lists both parents by name
        assert name in page, (name, page[-2000:])
    assert "Training runs" in page  # the model-training view, not GenAI traces
    for r in evals:  # the compare view shows both evaluate runs and their metrics
        assert r.info.run_id in compare
    # the parallel-coordinates plot opens on the first metric, a headline one
    assert "base/ppl_answer" in compare
    for png in ("mlflow-experiment.png", "mlflow-compare.png"):
        assert (out / png).read_bytes()[:4] == b"\x89PNG"
