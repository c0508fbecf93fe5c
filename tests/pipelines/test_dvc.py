"""The DVC compiler: golden output, block style, staleness of the root dvc.yaml."""

import subprocess
import sys
from pathlib import Path

import yaml

from pipelines import dvc
from pipelines.graph import build
from pipelines.spec import load, validate

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = Path(__file__).with_name("golden_dvc.yaml")
TOY = {
    "pipeline": "toy",
    "stages": {
        "src": {"kind": "toysrc", "matrix": {"n": [2, 3]}},
        "add": {"kind": "toyadd", "data": "src", "offset": 5},
        "all": {"kind": "toyadd", "data": "src", "extra": ["add"], "seeds": [0]},
    },
}


def toy_text():
    graph = build(validate(TOY))
    return dvc.render(dvc.compile_graph(graph, "params.yaml", ROOT), "params.yaml")


def test_toy_pipeline_matches_golden(toy_kinds):
    text = toy_text()
    if not GOLDEN.exists():  # first run writes the golden file for review
        GOLDEN.write_text(text)
    assert text == GOLDEN.read_text()


def test_compiled_yaml_is_block_style_and_wires_variants(toy_kinds):
    text = toy_text()
    assert "[" not in text and "{" not in text.replace("${", "")
    doc = yaml.safe_load(text)["stages"]
    add = doc["add"]
    assert add["foreach"] == {
        "2": {"node": "add@2", "data": "src@2"},
        "3": {"node": "add@3", "data": "src@3"},
    }
    assert add["do"]["cmd"] == "carp stage add@${key}"
    assert add["do"]["deps"][0] == "artifacts/${item.data}"
    assert add["do"]["params"] == ["stages.add"]
    # outputs persist: DVC keeps the last good one while carp replaces it
    assert add["do"]["outs"] == [{"artifacts/add@${key}": {"persist": True}}]
    assert add["do"]["metrics"] == [
        {"reports/add@${key}/metrics.json": {"persist": True}}
    ]
    # a list input takes the variants of the node's own origin (src = 2 or 3)
    all_ = doc["all"]["foreach"]
    assert set(all_) == {"2-s0", "3-s0"}
    assert all_["2-s0"]["dep0"] == "artifacts/add@2"
    assert all_["3-s0"]["dep0"] == "artifacts/add@3"


def test_root_dvc_yaml_is_current():
    graph = build(load(ROOT / "params.yaml"))
    text = dvc.render(dvc.compile_graph(graph, "params.yaml", ROOT), "params.yaml")
    assert (ROOT / "dvc.yaml").read_text() == text, (
        "dvc.yaml is stale: run `carp compile params.yaml` and commit it"
    )


def test_compile_check_exit_codes(tmp_path):
    carp = [sys.executable, "-m", "pipelines.cli"]
    ok = subprocess.run(
        carp + ["compile", "params.yaml", "--check"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert ok.returncode == 0, ok.stderr
    stale = tmp_path / "dvc.yaml"
    stale.write_text("stages: {}\n")
    bad = subprocess.run(
        carp + ["compile", "params.yaml", "--check", "-o", str(stale)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 1 and "stale" in bad.stderr


def _params_of(doc, stage):
    body = doc["stages"][stage]
    return (body.get("do") or body)["params"]


def test_inherited_top_level_seed_is_a_param_of_exactly_its_stages(toy_kinds):
    """A stage that takes the pipeline's `seed` lists it; one with its own
    `seed:`, a `seeds:` sweep or a matrix over seed does not."""
    decl = {
        "pipeline": "toy",
        "seed": 4,
        "stages": {
            "src": {"kind": "toysrc"},
            "own": {"kind": "toyadd", "data": "src", "seed": 1},
            "swept": {"kind": "toyadd", "data": "src", "seeds": [1, 2]},
            "grid": {"kind": "toyadd", "data": "src", "matrix": {"seed": [3]}},
            "inherit": {"kind": "toyadd", "data": "src", "matrix": {"offset": [1, 2]}},
        },
    }
    graph = build(validate(decl))
    doc = dvc.compile_graph(graph, "params.yaml", ROOT)
    tracked = {s: _params_of(doc, s) for s in decl["stages"]}
    assert tracked == {
        "src": ["stages.src", "seed"],
        "own": ["stages.own"],
        "swept": ["stages.swept"],
        "grid": ["stages.grid"],
        "inherit": ["stages.inherit", "seed"],
    }
    assert graph.nodes["inherit@1"].params.seed == 4
    # another declaration file: the keys sit under that file
    other = dvc.compile_graph(graph, "study.yaml", ROOT)
    assert _params_of(other, "src") == [{"study.yaml": ["stages.src", "seed"]}]


def test_a_top_level_key_the_file_leaves_out_is_not_tracked(toy_kinds):
    """DVC refuses a params key missing from the file: without `seed:` at the
    top, the header's default applies and only the stage's section is listed."""
    decl = {"pipeline": "toy", "stages": {"src": {"kind": "toysrc"}}}
    graph = build(validate(decl))
    assert graph.decl.stages["src"].inherits == ("seed",)
    doc = dvc.compile_graph(graph, "params.yaml", ROOT)
    assert _params_of(doc, "src") == ["stages.src"]


def test_top_level_seed_changes_the_cache_key_of_inheriting_nodes(toy_kinds):
    from pipelines.graph import cache_key

    def keys(seed):
        decl = {
            "pipeline": "toy",
            "seed": seed,
            "stages": {
                "src": {"kind": "toysrc"},
                "own": {"kind": "toyadd", "data": "src", "seed": 1},
            },
        }
        graph = build(validate(decl))
        return {n: cache_key(node, {}) for n, node in graph.nodes.items()}

    a, b = keys(0), keys(1)
    assert a["src"] != b["src"] and a["own"] == b["own"]


def test_local_data_files_are_deps_and_their_content_is_in_the_cache_key(tmp_path):
    """A dataset read from local files depends on them under DVC, and carp's
    cache key follows their content, not their mtime."""
    import os

    from pipelines.graph import cache_key, data_fingerprints

    data = tmp_path / "data"
    data.mkdir()
    (data / "a.jsonl").write_text('{"instruction": "x", "output": "y"}\n')
    decl = {
        "pipeline": "t",
        "stages": {
            "mine": {"kind": "dataset", "method": "files", "path": "data/a.jsonl"},
            "w": {"kind": "world"},
        },
    }
    graph = build(validate(decl))
    doc = dvc.compile_graph(graph, "params.yaml", tmp_path)
    assert "data/a.jsonl" in doc["stages"]["mine"]["deps"]
    assert not any("data/" in d for d in doc["stages"]["w"]["deps"])

    node = graph.nodes["mine"]

    def key():
        return cache_key(node, {}, data_fingerprints(node, tmp_path))

    before = key()
    f = data / "a.jsonl"
    st = f.stat()
    f.write_text('{"instruction": "x", "output": "z"}\n')  # same size
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert key() != before
    f.write_text('{"instruction": "x", "output": "y"}\n')
    assert key() == before  # content, not mtime
