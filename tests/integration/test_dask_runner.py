"""A distributed task runner (slow): the micro pipeline's nodes on a 2-worker
Dask LocalCluster through prefect-dask's DaskTaskRunner give the same results
and fingerprints as the serial run (one node at a time, in the flow's process)."""

from __future__ import annotations

import json

import pytest

from tests.integration.test_micro_pipeline import (  # noqa: F401  (fixture)
    STAGES,
    fingerprints,
    project,
    sh,
)

# this CPU-starved machine: a micro run can take 15 min
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]


def _metrics(proj):
    """Each node's metrics without wall-clock and memory readings."""
    out = {}
    for s in STAGES:
        m = json.loads((proj / "reports" / s / "metrics.json").read_text())
        out[s] = {
            k: v
            for k, v in m.items()
            if not any(w in k for w in ("time", "seconds", "per_s", "rss", "_mb"))
        }
    return out


def test_dask_local_cluster_matches_serial_run(project):  # noqa: F811
    pytest.importorskip("prefect_dask")  # the `dask` extra
    proj, env = project
    env = {**env, "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "900"}
    serial_run = ["carp", "run", "params.yaml", "--max-parallel", "1", "--no-track"]
    sh(serial_run, proj, env, timeout=3000)
    serial, serial_metrics = fingerprints(proj), _metrics(proj)
    out = sh(
        [
            "carp",
            "run",
            "params.yaml",
            "--force",
            "--no-track",
            "--max-parallel",
            "2",
            "--task-runner",
            "dask",
        ],
        proj,
        env,
        timeout=3000,
    )
    assert "nodes on DaskTaskRunner" in out, out[-2000:]
    assert fingerprints(proj) == serial
    assert _metrics(proj) == serial_metrics
