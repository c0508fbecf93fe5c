"""Run-graph expansion: matrix/seeds variants, fan-out, list inputs, joins."""

import pytest

from pipelines.graph import build, folder_fingerprint
from pipelines.spec import DeclarationError, validate


def decl(stages):
    return validate({"pipeline": "t", "seed": 7, "stages": stages})


def test_plain_pipeline_keeps_declared_names_and_order(toy_kinds):
    g = build(decl({"b": {"kind": "toyadd", "data": "a"}, "a": {"kind": "toysrc"}}))
    assert list(g.nodes) == ["a", "b"]
    assert g.nodes["b"].inputs == {"data": "a", "extra": []}
    assert g.nodes["a"].params.seed == 7  # pipeline seed fills in


def test_matrix_and_seeds_expand_to_named_variants(toy_kinds):
    g = build(
        decl(
            {
                "a": {"kind": "toysrc", "matrix": {"n": [2, 4]}, "seeds": [0, 1]},
            }
        )
    )
    assert list(g.nodes) == ["a@2-s0", "a@2-s1", "a@4-s0", "a@4-s1"]
    assert g.nodes["a@4-s1"].params.n == 4
    assert g.nodes["a@4-s1"].params.seed == 1


def test_downstream_fans_out_per_variant_and_lists_take_their_origins(toy_kinds):
    g = build(
        decl(
            {
                "a": {"kind": "toysrc", "matrix": {"n": [2, 4]}},
                "b": {"kind": "toyadd", "data": "a"},
                "c": {"kind": "toyadd", "data": "b", "extra": ["a", "b"]},
            }
        )
    )
    assert [n for n in g.nodes if n.startswith("b")] == ["b@2", "b@4"]
    assert g.nodes["b@4"].inputs["data"] == "a@4"
    # c fans out along b; its list input holds the variants of a and b that
    # agree with its own origin (a = 2)
    assert g.nodes["c@2"].inputs["extra"] == ["a@2", "b@2"]
    assert g.downstream_of("a@2") == ["a@2", "b@2", "c@2"]
    # without a swept single input, a list takes every variant
    g = build(
        decl(
            {
                "a": {"kind": "toysrc", "matrix": {"n": [2, 4]}},
                "s": {"kind": "toysrc"},
                "c": {"kind": "toyadd", "data": "s", "extra": ["a"]},
            }
        )
    )
    assert g.nodes["c"].inputs["extra"] == ["a@2", "a@4"]


def test_a_variant_is_named_by_its_node_name(toy_kinds):
    g = build(
        decl(
            {
                "a": {"kind": "toysrc", "matrix": {"n": [2, 4, 8]}},
                "b": {"kind": "toyadd", "data": "a@4", "extra": ["a@2", "a@8"]},
            }
        )
    )
    # one node (no fan-out), named after the variant it derives from
    assert [n for n in g.nodes if n.startswith("b")] == ["b@4"]
    assert g.nodes["b@4"].inputs == {"data": "a@4", "extra": ["a@2", "a@8"]}
    assert g.downstream_of("a@2") == ["a@2", "b@4"]


def test_an_unknown_variant_names_the_field_and_the_variants(toy_kinds):
    d = decl(
        {
            "a": {"kind": "toysrc", "matrix": {"n": [2, 4]}},
            "b": {"kind": "toyadd", "data": "a", "extra": ["a@3"]},
        }
    )
    with pytest.raises(DeclarationError) as e:
        build(d)
    assert "stages.b.extra" in str(e.value)
    assert "no variant named 'a@3'; the variants are: a@2, a@4" in str(e.value)


def test_two_swept_inputs_join_on_shared_origin(toy_kinds):
    g = build(
        decl(
            {
                "a": {"kind": "toysrc", "matrix": {"n": [1, 2]}},
                "b": {"kind": "toyadd", "data": "a", "matrix": {"offset": [5, 6]}},
                "c": {"kind": "toyadd", "data": "b"},
            }
        )
    )
    assert sorted(n for n in g.nodes if n.startswith("c")) == [
        "c@1-5",
        "c@1-6",
        "c@2-5",
        "c@2-6",
    ]
    assert g.nodes["c@2-6"].inputs["data"] == "b@2-6"


def test_folder_fingerprint_ignores_metadata_and_plots(tmp_path):
    (tmp_path / "data.jsonl").write_text("x")
    fp = folder_fingerprint(tmp_path)
    (tmp_path / "metrics.json").write_text('{"t": 1}')
    (tmp_path / "plots").mkdir()
    (tmp_path / "plots" / "a.png").write_bytes(b"1")
    assert folder_fingerprint(tmp_path) == fp
    (tmp_path / "data.jsonl").write_text("y")
    assert folder_fingerprint(tmp_path) != fp


@pytest.mark.parametrize("bad", [{"n": []}, {"nn": [1]}])
def test_bad_matrix_is_reported(toy_kinds, bad):
    from pipelines.spec import DeclarationError

    with pytest.raises(DeclarationError) as e:
        decl({"a": {"kind": "toysrc", "matrix": bad}})
    assert e.value.issues[0].path.startswith("stages.a.matrix")


def test_a_list_input_takes_only_the_variants_of_the_nodes_own_origin():
    g = build(
        decl(
            {
                "world": {"kind": "world", "seeds": [0, 1]},
                "base": {"kind": "pretrain", "data": "world"},
                "prune": {
                    "kind": "prune",
                    "method": "magnitude",
                    "model": "base",
                    "matrix": {"sparsity": [0.3, 0.5]},
                },
                "eval": {
                    "kind": "evaluate",
                    "models": ["base", "prune", "base@s0"],
                    "data": "world",
                },
            }
        )
    )
    assert g.nodes["eval@s1"].inputs["models"] == [
        "base@s1",
        "prune@s1-0.3",
        "prune@s1-0.5",
        "base@s0",  # named variants are taken as named
    ]
    assert g.nodes["eval@s0"].inputs["models"][:3] == [
        "base@s0",
        "prune@s0-0.3",
        "prune@s0-0.5",
    ]
