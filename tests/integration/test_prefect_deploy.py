"""Prefect for real (slow): `prefect server start` on 127.0.0.1, two process
work pools with a worker each, `carp deploy` with an override and the recover
kind routed to the second pool, one triggered flow run waited for; the MLflow
parent run, its child runs and every output are checked. Everything started is
stopped (process groups). Also: `python scripts/prefect_e2e.py`."""

from __future__ import annotations

import pytest

from scripts.prefect_e2e import check, make_project, run_e2e

# this CPU-starved machine: a micro run can take 15 min
pytestmark = [pytest.mark.slow, pytest.mark.integration, pytest.mark.timeout(3600)]


def test_server_worker_deployment_end_to_end(tmp_path):
    project = make_project(tmp_path / "project")
    seen = run_e2e(project, tmp_path)
    print({k: v for k, v in seen.items() if k.endswith("_s")})
    assert "Completed" in seen["run"], seen["run"][-3000:]
    # recover ran as a flow run of carp-node on the second ("gpu") pool
    assert "recover" in seen["node_runs"] and "COMPLETED" in seen["node_runs"]
    got = check(project)
    assert got["parents"] == [("FINISHED", "micro")]
    assert got["children"] == sorted(got["stages"]) and got["children_share_parent"]
    assert all(got["outputs"].values()), got["outputs"]
    assert got["prune_sparsity"] == 0.4  # the deployment's override reached the run
