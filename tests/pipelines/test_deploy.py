"""`carp deploy`: overrides, routes and refusals before Prefect is contacted
(the deployment itself runs in tests/integration/test_prefect_deploy.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.deploy import apply_overrides, load_graph, route_of
from pipelines.cli import main, pairs
from pipelines.spec import DeclarationError

ROOT = Path(__file__).resolve().parents[2]
MICRO = ROOT / "pipelines" / "presets" / "micro.yaml"


def test_overrides_set_typed_values_and_are_validated():
    g = load_graph(MICRO, ["stages.prune.sparsity=0.4", "seed=3"])
    assert g.nodes["prune"].params.sparsity == 0.4
    assert g.nodes["prune"].params.seed == 3  # the header seed reaches stages
    with pytest.raises(DeclarationError, match=r"stages\.prune\.sparsity"):
        load_graph(MICRO, ["stages.prune.sparsity=1.5"])
    with pytest.raises(ValueError, match="stages.nope is not a mapping"):
        apply_overrides({"stages": {}}, ["stages.nope.x=1"])
    with pytest.raises(ValueError, match="KEY.PATH=VALUE"):
        apply_overrides({}, ["sparsity"])


def test_routes_by_stage_then_kind():
    g = load_graph(MICRO)
    routes = pairs(["recover=gpu", "eval=cpu-big"], "--route", "K=P")
    assert route_of(g.nodes["recover"], routes) == "gpu"  # by kind
    assert route_of(g.nodes["eval"], routes) == "cpu-big"  # by stage name
    assert route_of(g.nodes["prune"], routes) is None
    with pytest.raises(ValueError, match="--route 'recover': write K=P"):
        pairs(["recover"], "--route", "K=P")


def test_deploy_refuses_before_contacting_prefect(capsys, monkeypatch):
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    with pytest.raises(SystemExit, match="needs a Prefect server"):
        main(["deploy", str(MICRO), "--pool", "p", "--cron", "0 3 * * *"])
    monkeypatch.setenv("PREFECT_API_URL", "http://127.0.0.1:9/api")  # never reached
    assert main(["deploy", str(MICRO), "--pool", "p", "--route", "gpu=x"]) == 1
    assert "no such kind or stage" in capsys.readouterr().err
    assert main(["deploy", str(MICRO), "--pool", "p", "--cron", "61 * * * *"]) == 1
    assert "not a valid cron" in capsys.readouterr().err


def test_prefect_yaml_matches_what_carp_deploy_creates():
    """prefect.yaml's deployments name the flow carp deploys, with the
    parameters carp deploy passes (file, root, overrides, routes)."""
    import inspect

    import yaml

    from flows import deploy, pipeline

    doc = yaml.safe_load((ROOT / "prefect.yaml").read_text())
    accepted = set(inspect.signature(pipeline.carp_pipeline.fn).parameters)
    for dep in doc["deployments"]:
        assert dep["entrypoint"] == deploy.ENTRY_PIPELINE
        assert set(dep["parameters"]) == {"file", "root", "overrides", "routes"}
        assert set(dep["parameters"]) <= accepted
        load_graph(ROOT / dep["parameters"]["file"], dep["parameters"]["overrides"])
        for when in dep.get("schedules", []):
            pipeline.check_cron(when["cron"])
    path, _, fn = deploy.ENTRY_NODE.partition(":")
    assert (ROOT / path).is_file() and hasattr(deploy, fn)
