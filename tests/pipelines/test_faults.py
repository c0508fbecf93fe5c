"""Faults (issue 14): killed stages, killed `carp run`s and MLflow parent runs.

The default suite keeps the cheap checks (a child dies with its parent; a DVC
stage ends the parent run it reopened; SIGTERM inside a stage leaves the last
good output and ends its runs KILLED). The same against a real MLflow store is
``slow``: ``pytest -m slow tests/pipelines/test_faults.py``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[2]


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def _gone(pid: int, seconds: float) -> bool:
    end = time.time() + seconds
    while time.time() < end:
        if not _alive(pid):
            return True
        time.sleep(0.1)
    return False


def test_child_started_with_die_with_parent_dies_on_sigkill():
    code = (
        "import subprocess, sys, time\n"
        "from pipelines.procs import die_with_parent\n"
        "p = subprocess.Popen(['sleep', '60'], preexec_fn=die_with_parent)\n"
        "print(p.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen(
        [sys.executable, "-c", code],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    assert _gone(child, 10), "the child outlived its SIGKILLed parent"


def _sigterm_once_started(root: Path, node: str) -> None:
    """SIGTERM this process once ``node`` is running (its temp folder exists)."""

    def watch() -> None:
        end = time.time() + 120
        while time.time() < end:
            if list((root / "artifacts").glob(f".tmp-{node}-*")):
                time.sleep(0.3)
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    threading.Thread(target=watch, daemon=True).start()


# -- MLflow parent runs end, also one `carp stage` process at a time (DVC) -----


def _toy(tmp_path: Path) -> Path:
    stages = {
        "a": {"kind": "toysrc"},
        "b": {"kind": "toyadd", "data": "a"},
        "f": {"kind": "toyfail", "data": "a"},
    }
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump({"pipeline": "faults", "stages": stages}))
    return f


def _runs(uri: str) -> dict[str, list]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("carp-faults")
    runs = client.search_runs([exp.experiment_id])
    out: dict[str, list] = {"parent": [], "stage": []}
    for r in runs:
        out[r.data.tags["carp.role"]].append(r)
    return out


@pytest.mark.slow
@pytest.mark.integration
def test_stage_processes_end_the_parent_they_reopen(
    tmp_path, toy_kinds, monkeypatch, capsys
):
    """Under DVC each stage is its own `carp stage`; the parent run is found
    again, set RUNNING, and ended by that stage: FINISHED, FAILED, KILLED."""
    monkeypatch.chdir(tmp_path)
    uri = f"sqlite:///{tmp_path}/m.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    f = str(_toy(tmp_path))
    assert main(["stage", "a", "--file", f]) == 0
    runs = _runs(uri)
    assert [r.info.status for r in runs["parent"]] == ["FINISHED"]
    assert main(["stage", "b", "--file", f]) == 0
    runs = _runs(uri)
    assert [r.info.status for r in runs["parent"]] == ["FINISHED"]  # the same one
    assert main(["stage", "f", "--file", f]) == 1
    runs = _runs(uri)
    assert [r.info.status for r in runs["parent"]] == ["FAILED"]
    good = (tmp_path / "artifacts" / "a" / "carp.json").read_text()
    slow = yaml.safe_load(Path(f).read_text())
    slow["stages"]["a"]["sleep"] = 30.0
    Path(f).write_text(yaml.safe_dump(slow))
    _sigterm_once_started(tmp_path, "a")
    t0 = time.time()
    assert main(["stage", "a", "--file", f]) == 143
    assert time.time() - t0 < 120
    assert "terminated" in capsys.readouterr().err
    runs = _runs(uri)  # the edited declaration has a parent of its own
    assert sorted(r.info.status for r in runs["parent"]) == ["FAILED", "KILLED"]
    by_status = sorted(r.info.status for r in runs["stage"])
    assert by_status == ["FAILED", "FINISHED", "FINISHED", "KILLED"]
    assert all(r.info.end_time for r in runs["parent"] + runs["stage"])
    # the interrupted stage left its last good output and no temp folder
    assert (tmp_path / "artifacts" / "a" / "carp.json").read_text() == good
    assert not list((tmp_path / "artifacts").glob(".tmp-*"))


class _Recorder:
    """A pipeline run that records how carp ends it (no MLflow)."""

    tracking = False
    parent_id = None

    def __init__(self) -> None:
        self.ended: list[str] = []

    def stage(self, name, tags, params):
        from pipelines.lineage import NullStageRun

        return NullStageRun()

    def end(self, ok: bool, status: str | None = None) -> None:
        self.ended.append(status or ("FINISHED" if ok else "FAILED"))


def test_carp_stage_ends_its_parent_and_sigterm_keeps_the_last_output(
    tmp_path, toy_kinds, monkeypatch, capsys
):
    """The cheap representative: each `carp stage` ends the parent it opened
    (FINISHED / FAILED / KILLED), and a SIGTERM mid-stage exits 143 with the
    last good output intact and no temp folder."""
    import pipelines.runtime as runtime

    monkeypatch.chdir(tmp_path)
    runs: list[_Recorder] = []

    def opened(graph, layout, reuse):
        assert reuse  # one process per stage: the parent is found again
        runs.append(_Recorder())
        return runs[-1]

    monkeypatch.setattr(runtime, "open_lineage", opened)
    before = signal.getsignal(signal.SIGTERM)
    f = str(_toy(tmp_path))
    assert main(["stage", "a", "--file", f]) == 0
    assert main(["stage", "f", "--file", f]) == 1
    good = (tmp_path / "artifacts" / "a" / "carp.json").read_text()
    slow = yaml.safe_load(Path(f).read_text())
    slow["stages"]["a"]["sleep"] = 30.0
    Path(f).write_text(yaml.safe_dump(slow))
    _sigterm_once_started(tmp_path, "a")
    t0 = time.time()
    assert main(["stage", "a", "--file", f]) == 143
    assert time.time() - t0 < 60  # stopped long before the 30 s sleep ends
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    assert [r.ended for r in runs] == [["FINISHED"], ["FAILED"], ["KILLED"]]
    assert (tmp_path / "artifacts" / "a" / "carp.json").read_text() == good
    assert not list((tmp_path / "artifacts").glob(".tmp-*"))
    assert signal.getsignal(signal.SIGTERM) == before  # carp's handler removed
