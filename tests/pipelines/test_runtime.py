"""Stage runtime: atomic publish, metadata files, skip-if-unchanged, lineage."""

import json

import pytest

from pipelines.graph import build
from pipelines.runtime import Layout, StageError, open_lineage, run_node
from pipelines.spec import validate


def graph(stages):
    return build(validate({"pipeline": "rt", "stages": stages}))


def test_stage_writes_metadata_and_report(tmp_path, toy_kinds):
    g = graph({"a": {"kind": "toysrc"}, "b": {"kind": "toyadd", "data": "a"}})
    lay = Layout(tmp_path)
    run_node(g, "a", lay)
    man = run_node(g, "b", lay)
    out = tmp_path / "artifacts" / "b"
    assert {p.name for p in out.iterdir()} >= {
        "carp.json",
        "metrics.json",
        "params.resolved.yaml",
        "data.jsonl",
    }
    assert json.loads((out / "metrics.json").read_text())["total"] == 3 + 30
    assert (
        man["inputs"]["data"]
        == json.loads((tmp_path / "artifacts" / "a" / "carp.json").read_text())[
            "fingerprint"
        ]
    )
    assert (tmp_path / "reports" / "b" / "plots" / "values.csv").exists()


def test_failing_stage_leaves_nothing_and_keeps_previous_output(tmp_path, toy_kinds):
    g = graph({"a": {"kind": "toysrc"}, "f": {"kind": "toyfail", "data": "a"}})
    lay = Layout(tmp_path)
    run_node(g, "a", lay)
    before = (tmp_path / "artifacts" / "a" / "carp.json").read_text()
    with pytest.raises(RuntimeError, match="toy failure"):
        run_node(g, "f", lay)
    names = sorted(p.name for p in (tmp_path / "artifacts").iterdir())
    assert names == ["a"]  # no f, no .tmp-* leftovers
    assert (tmp_path / "artifacts" / "a" / "carp.json").read_text() == before


def test_missing_input_is_a_clear_error(tmp_path, toy_kinds):
    g = graph({"a": {"kind": "toysrc"}, "b": {"kind": "toyadd", "data": "a"}})
    with pytest.raises(StageError, match="input 'data' needs 'a'"):
        run_node(g, "b", Layout(tmp_path))


def test_unchanged_stage_is_skipped_and_changed_one_reruns(tmp_path, toy_kinds, caplog):
    lay = Layout(tmp_path)
    g = graph({"a": {"kind": "toysrc"}, "b": {"kind": "toyadd", "data": "a"}})
    first = run_node(g, "a", lay, force=False)
    b_first = run_node(g, "b", lay, force=False)
    with caplog.at_level("INFO", logger="carp"):
        again = run_node(g, "a", lay, force=False)
        b_again = run_node(g, "b", lay, force=False)  # its report holds a timing
    assert b_again["fingerprint"] == b_first["fingerprint"]
    assert caplog.text.count("skipped") == 2
    assert again["fingerprint"] == first["fingerprint"]
    assert "unchanged" in caplog.text and "skipped" in caplog.text
    g2 = graph({"a": {"kind": "toysrc", "n": 4}})
    assert run_node(g2, "a", lay, force=False)["cache_key"] != first["cache_key"]


def test_headline_metrics_are_an_evaluated_models_numbers():
    from pipelines.lineage import HEADLINE

    keep = ["base/em/mean", "recover@s1/ppl_answer", "m/mc/acc", "m/bits_per_byte"]
    drop = ["prune-vs-base/em/mean", "base/em/add", "base/em/mean_lo", "loss"]
    drop += ["seeds/recover/em/mean"]
    assert all(HEADLINE.match(k) for k in keep)
    assert not any(HEADLINE.match(k) for k in drop)


def test_lineage_one_parent_and_a_child_per_stage(tmp_path, toy_kinds, monkeypatch):
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/m.db")
    g = graph({"a": {"kind": "toysrc"}, "b": {"kind": "toyadd", "data": "a"}})
    lay = Layout(tmp_path)
    for name in g.nodes:  # one process per stage, as under dvc repro
        run_node(g, name, lay, open_lineage(g, lay, reuse=True))
    client = MlflowClient(f"sqlite:///{tmp_path}/m.db")
    exp = client.get_experiment_by_name("carp-rt")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("carp.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("carp.role") == "stage"]
    assert len(parents) == 1 and len(children) == 2
    pid = parents[0].info.run_id
    # a distinct name; the pipeline's params by node; the model-training view
    commit = parents[0].data.tags["carp.git_commit"][:8]
    assert parents[0].info.run_name == f"rt · dvc · {commit}"
    assert parents[0].data.params["b.offset"] == "1"
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    for child in children:
        tags = child.data.tags
        assert tags["mlflow.parentRunId"] == pid
        assert tags["carp.output_fingerprint"] and tags["carp.decl_hash"]
        assert "carp.git_commit" in tags
    b = next(c for c in children if c.info.run_name == "b")
    assert b.data.params["b.offset"] == "1"
    assert b.data.tags["carp.input.data"]
    assert b.data.tags["carp.input_node.data"] == "a"  # names the input node
    assert [m.value for m in client.get_metric_history(b.info.run_id, "loss")] == [
        1.0,
        0.5,
        1 / 3,
    ]
    assert b.inputs.dataset_inputs  # log_input of the upstream dataset
    (di,) = b.inputs.dataset_inputs
    a_meta = json.loads((tmp_path / "artifacts" / "a" / "dataset.json").read_text())
    assert di.dataset.digest == a_meta["sha256"][:16]  # the content, not a path
    tags = {t.key: t.value for t in di.tags}
    assert tags["mlflow.data.context"] == "data"
    assert tags["carp.rows"] == str(a_meta["count"])
