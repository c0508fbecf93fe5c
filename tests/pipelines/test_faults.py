"""Faults: killed stages, killed `carp run`s and MLflow parent runs.

The default suite keeps the cheap checks (a child dies with its parent; a DVC
stage ends the parent run it reopened; SIGTERM inside a stage, or between the
renames of a publish, leaves a complete output and ends its runs KILLED; an
output a SIGKILLed publish left aside is put back). ``slow`` (``pytest -m slow
tests/pipelines/test_faults.py``): the same against a real MLflow store, and on
a git + DVC project of the micro pipeline, prune, select, recover and evaluate
killed by SIGTERM and by SIGKILL at a random point under `carp stage` and under
`dvc repro`, a damaged output restored by the command carp prints, a `dvc
repro` that cannot find `carp` keeping the outputs (they persist) and a
SIGKILLed `carp run` leaving no Prefect server.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from pipelines.cli import main
from pipelines.graph import folder_fingerprint

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


def test_sigterm_between_the_renames_of_a_publish_waits_for_them(
    tmp_path, toy_kinds, monkeypatch, capsys
):
    """A SIGTERM that lands after the old output was moved aside and before
    the new one took its place takes effect once both (and the report) are in
    place: exit 143 with a complete output, never a missing one."""
    import pipelines.runtime as runtime

    monkeypatch.chdir(tmp_path)
    f = str(_toy(tmp_path))
    assert main(["stage", "a", "--file", f, "--no-track"]) == 0
    out = tmp_path / "artifacts" / "a"
    rename = os.replace

    def replace(src, dst):
        rename(src, dst)
        if Path(src) == out:  # the old output moved aside: mid-publish
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(runtime.os, "replace", replace)
    assert main(["stage", "a", "--file", f, "--no-track"]) == 143
    assert "terminated (SIGTERM)" in capsys.readouterr().err
    man = runtime.read_manifest(out)
    assert man is not None, "the SIGTERM left the output missing"
    assert runtime.folder_fingerprint(out, runtime.volatile(man)) == man["fingerprint"]
    assert (tmp_path / "reports" / "a" / "metrics.json").exists()
    assert not list((tmp_path / "artifacts").glob(".t*"))


@pytest.mark.parametrize("whole", [True, False])
def test_output_a_sigkilled_publish_left_aside_is_put_back(
    whole, tmp_path, toy_kinds, monkeypatch, capsys
):
    """SIGKILL between the two renames of a publish leaves the last good output
    in ``.trash-<node>-*``: the next stage that reads it renames it back (a
    damaged one is not), and the node's own next run cleans up."""
    monkeypatch.chdir(tmp_path)
    f = str(_toy(tmp_path))
    assert main(["stage", "a", "--file", f, "--no-track"]) == 0
    art = tmp_path / "artifacts"
    good = (art / "a" / "carp.json").read_text()
    os.replace(art / "a", art / ".trash-a-0123abcd")  # the killed publish
    (art / ".tmp-a-4567cdef").mkdir()  # and its new folder
    if not whole:  # a file lost: not the last good output any more
        next(p for p in (art / ".trash-a-0123abcd").rglob("*.jsonl")).unlink()
    rc = main(["stage", "b", "--file", f, "--no-track"])
    if whole:
        assert rc == 0
        assert (art / "a" / "carp.json").read_text() == good
    else:
        assert rc == 1
        assert "run `dvc repro a`" in capsys.readouterr().err
        assert not (art / "a").exists()
    assert main(["stage", "a", "--file", f, "--no-track"]) == 0
    left = sorted(p.name for p in art.iterdir())
    assert left == (["a", "b"] if whole else ["a"])


# -- slow: the micro pipeline under git + DVC, its stages killed ----------------

KILLED = ["prune", "select", "recover", "eval"]
SEED = int(os.environ.get("CARP_FAULT_SEED", "14"))  # reported with every kill
HOW = {
    "carp stage": lambda node: ["carp", "stage", node],
    # forced: a repro that finds nothing stale runs no carp at all
    "dvc repro": lambda node: ["dvc", "repro", "-f", "-s", node],
}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """A git + DVC project on the micro pipeline, reproduced once (the
    uninterrupted run); returns it, its environment and its fingerprints."""
    from tests.integration.project import make_project, sh

    proj = tmp_path_factory.mktemp("faults")
    env = make_project(proj, (ROOT / "pipelines/presets/micro.yaml").read_text())
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"], ["carp", "compile"]):
        sh(cmd, proj, env)
    sh(["git", "add", "-A"], proj, env)
    sh(["git", "commit", "-qm", "micro"], proj, env)
    sh(["dvc", "repro"], proj, env)
    return proj, env, {n: _intact(proj, n) for n in _nodes(proj)}


@pytest.fixture
def fresh(project, tmp_path):
    """A copy of the reproduced project for one test to damage."""
    src, env, good = project
    proj = tmp_path / "proj"
    shutil.copytree(src, proj, symlinks=True)
    env = {**env, "PYTHONPATH": str(proj), "PREFECT_HOME": str(proj / ".prefect")}
    return proj, env, good


def _nodes(proj: Path) -> list[str]:
    art = proj / "artifacts"
    return sorted(p.name for p in art.iterdir() if not p.name.startswith("."))


def _intact(proj: Path, node: str) -> str:
    """The output is complete and what its manifest recorded; its fingerprint."""
    from pipelines.runtime import read_manifest, volatile

    out = proj / "artifacts" / node
    man = read_manifest(out)
    assert man is not None, f"{out} lost its output"
    assert folder_fingerprint(out, volatile(man)) == man["fingerprint"], out
    assert (proj / "reports" / node / "metrics.json").exists()
    return man["fingerprint"]


def _leftovers(proj: Path) -> list[str]:
    return sorted(
        p.name
        for top in ("artifacts", "reports")
        for p in (proj / top).glob(".*")
        if p.name.startswith((".tmp-", ".trash-"))
    )


def _group_gone(pgid: int, seconds: float) -> bool:
    """No live process is left in process group ``pgid``."""
    end = time.time() + seconds
    while time.time() < end:
        left = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[2]) == pgid and fields[0] != "Z":
                left.append(stat)
        if not left:
            return True
        time.sleep(0.1)
    return False


def _kill_mid_stage(args, proj, env, node, sig, rng, log: Path) -> str:
    """Run ``args`` in its own process group and send ``sig`` to the group a
    random fraction of the stage's measured duration after the stage began
    (its temp folder appeared). The stage's resume caches are cleared first,
    so the kill lands in real work. A run that finishes before its kill point
    measured a shorter stage: draw again within that. Returns what happened."""
    metrics = json.loads((proj / "reports" / node / "metrics.json").read_text())
    window = float(metrics["stage_seconds"])
    art = proj / "artifacts"
    for attempt in range(1, 6):
        for cache in (node, "select-scores"):
            shutil.rmtree(proj / "checkpoints" / cache, ignore_errors=True)
        delay = rng.uniform(0.0, window)
        with log.open("w") as out:
            proc = subprocess.Popen(
                args,
                cwd=proj,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        began = None
        while proc.poll() is None and began is None:
            if any(art.glob(f".tmp-{node}-*")):
                began = time.monotonic()
            time.sleep(0.001)
        while began is not None and proc.poll() is None:
            if time.monotonic() >= began + delay:
                os.killpg(proc.pid, sig)
                rc = proc.wait(timeout=300)
                assert _group_gone(proc.pid, 60), f"{args} left processes behind"
                return (
                    f"{sig.name} {delay:.2f} s into {node} (window {window:.2f} s, "
                    f"attempt {attempt}, seed {SEED}): exit {rc}"
                )
            time.sleep(0.001)
        assert proc.returncode == 0, log.read_text()[-3000:]
        if began is not None:  # finished first: the stage takes this long now
            window = min(window, time.monotonic() - began)
    pytest.fail(f"{args} always finished before the kill point ({window:.3f} s)")


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(3600)
@pytest.mark.parametrize("node", KILLED)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["TERM", "KILL"])
@pytest.mark.parametrize("how", list(HOW), ids=["carp_stage", "dvc_repro"])
def test_killed_stage_keeps_the_last_good_output(fresh, how, sig, node, tmp_path):
    """``node`` of the micro pipeline killed at a random point (seeded by
    ``CARP_FAULT_SEED``, default 14; the draw is printed) under `carp stage`
    or `dvc repro` (whose outputs persist): every output is still the one the
    uninterrupted run published; the next run of the stage leaves no temp
    folder and publishes the uninterrupted run's fingerprint again (resuming
    what the killed run cached), and after a repro `dvc status` finds the
    stage current."""
    from tests.integration.project import dvc_status, sh

    proj, env, good = fresh
    rng = random.Random(f"{SEED}-{how}-{sig.name}-{node}")
    args = HOW[how](node)
    what = _kill_mid_stage(args, proj, env, node, sig, rng, tmp_path / "log")
    print(f"{how}: {what}")
    assert what.rsplit("exit ", 1)[1] != "0", what
    assert {n: _intact(proj, n) for n in _nodes(proj)} == good, what
    if sig == signal.SIGTERM and how == "carp stage":
        assert not _leftovers(proj), what  # carp removed its temp folder
    sh(args, proj, env)
    assert not _leftovers(proj), what
    assert _intact(proj, node) == good[node], what
    if how == "dvc repro":  # its own record is current (downstream stages see
        # a new hash: the output's metrics.json holds the run's timings)
        assert node not in dvc_status(proj, env), what


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_damaged_output_is_restored_by_the_printed_command(fresh):
    """A file of a published output truncated behind carp's back: the next
    stage that reads it refuses and prints the command that restores it; that
    command (run as printed) brings back the output DVC recorded."""
    from tests.integration.project import sh

    proj, env, good = fresh
    weights = next((proj / "artifacts" / "prune").rglob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])
    res = subprocess.run(
        ["carp", "stage", "recover"], cwd=proj, env=env, capture_output=True, text=True
    )
    assert res.returncode == 1
    printed = re.search(r"restore it with `([^`]+)`", res.stderr)
    assert printed, res.stderr
    sh(printed.group(1).split(), proj, env)
    assert _intact(proj, "prune") == good["prune"]
    sh(["carp", "stage", "recover"], proj, env)
    assert _intact(proj, "recover") == good["recover"]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_missing_carp_under_dvc_keeps_the_outputs(fresh):
    """`dvc repro` without carp on PATH fails, and the outputs it would have
    replaced are still there (they persist)."""
    proj, env, good = fresh
    bare = {**env, "PATH": "/usr/bin:/bin"}
    res = subprocess.run(
        [str(Path(sys.executable).parent / "dvc"), "repro", "-f", "-s", "prune"],
        cwd=proj,
        env=bare,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert res.returncode != 0
    assert _intact(proj, "prune") == good["prune"]


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.timeout(1800)
def test_sigkilled_carp_run_leaves_no_prefect_server(fresh):
    import psutil

    proj, env, _ = fresh
    proc = subprocess.Popen(
        ["carp", "run", "--no-track", "--force"],
        cwd=proj,
        env={k: v for k, v in env.items() if k != "PREFECT_API_URL"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    server = None
    end = time.time() + 600
    while server is None and time.time() < end and proc.poll() is None:
        for child in psutil.Process(proc.pid).children(recursive=True):
            if "uvicorn" in " ".join(child.cmdline()):
                server = child.pid
        time.sleep(0.5)
    assert server is not None, "carp run started no temporary Prefect server"
    proc.kill()
    proc.wait()
    assert _gone(server, 15), "Prefect's temporary server outlived carp run"
