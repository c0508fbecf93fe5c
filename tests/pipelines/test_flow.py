"""The Prefect flow: independent nodes run concurrently, a failure stays local."""

import json

import pytest
import yaml

from flows.pipeline import run_pipeline

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def prefect_api(tmp_path_factory):
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def write(tmp_path, stages, **header):
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"pipeline": "flow", **header, "stages": stages}))
    return f


def times(tmp_path, node):
    return json.loads((tmp_path / "artifacts" / node / "times.json").read_text())


def max_overlap(spans):
    """Most spans running at one instant."""
    events = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
    best = cur = 0
    for _, step in events:
        cur += step
        best = max(best, cur)
    return best


def test_parallel_nodes_overlap_in_worker_processes_with_lineage(
    tmp_path, toy_kinds, prefect_api, monkeypatch
):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    stages = {
        "src": {
            "kind": "toysrc",
            "sleep": 0.5,
            # the first two nodes wait for each other: they overlap however
            # slowly the workers start on a loaded machine
            "rendezvous": str(tmp_path / "rendezvous"),
            "matrix": {"n": [1, 2, 3, 4]},
        },
        "add": {"kind": "toyadd", "data": "src"},
    }
    f = write(tmp_path, stages)
    report = run_pipeline(str(f), tmp_path, track=True, max_parallel=2)
    assert not report.failed and len(report.done) == 8
    spans = [times(tmp_path, f"src@{n}") for n in (1, 2, 3, 4)]
    assert max_overlap(spans) == 2  # two at a time, never more
    for n in (1, 2, 3, 4):  # every add started after its own src finished
        up_end = times(tmp_path, f"src@{n}")[1]
        made = (tmp_path / "artifacts" / f"add@{n}" / "carp.json").stat().st_mtime
        assert made >= up_end
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("carp-flow")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    kids = [r for r in runs if r.data.tags.get("carp.role") == "stage"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    assert sorted(k.info.run_name for k in kids) == sorted(report.done)
    assert all(k.info.status == "FINISHED" for k in kids)
    pid = parents[0].info.run_id
    assert {k.data.tags["mlflow.parentRunId"] for k in kids} == {pid}
    # a second run skips every node: no empty parent run is added
    again = run_pipeline(str(f), tmp_path, track=True, max_parallel=2)
    assert not again.failed and len(again.done) == 8
    assert len(client.search_runs([exp.experiment_id])) == len(runs)


def test_serial_flow_does_not_overlap(tmp_path, toy_kinds, prefect_api):
    stages = {"src": {"kind": "toysrc", "sleep": 0.3, "matrix": {"n": [1, 2, 3]}}}
    f = write(tmp_path, stages, max_parallel=1)
    report = run_pipeline(str(f), tmp_path, track=False)
    assert len(report.done) == 3
    spans = sorted(times(tmp_path, f"src@{n}") for n in (1, 2, 3))
    assert all(a[1] <= b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_a_failed_node_fails_only_its_descendants(tmp_path, toy_kinds, prefect_api):
    stages = {
        "src": {"kind": "toysrc"},
        "boom": {"kind": "toyfail", "data": "src"},
        "after": {"kind": "toyadd", "data": "boom"},
        "later": {"kind": "toyadd", "data": "after"},
        "sibling": {"kind": "toyadd", "data": "src", "offset": 2},
    }
    f = write(tmp_path, stages, max_parallel=2)
    report = run_pipeline(str(f), tmp_path, track=False)
    assert set(report.done) == {"src", "sibling"}
    assert set(report.failed) == {"boom"}
    assert "toy failure" in report.failed["boom"]
    assert report.not_run == {"after": ["boom"], "later": ["boom"]}
    assert (tmp_path / "artifacts" / "sibling" / "carp.json").exists()
    assert not (tmp_path / "artifacts" / "after").exists()
    summary = report.summary()
    assert "FAILED  boom" in summary and "NOT RUN later" in summary


def test_carp_run_exit_code_names_failed_nodes(
    tmp_path, toy_kinds, prefect_api, monkeypatch, capsys
):
    from pipelines.cli import main

    stages = {"src": {"kind": "toysrc"}, "boom": {"kind": "toyfail", "data": "src"}}
    f = write(tmp_path, stages)
    monkeypatch.chdir(tmp_path)
    assert main(["run", str(f), "--no-track"]) == 1
    assert "FAILED  boom" in capsys.readouterr().err
