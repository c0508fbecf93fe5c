"""Merge declarations: per-model values, densities, base, slerp arity, all
reported by `carp validate` with their YAML paths before anything runs."""

from __future__ import annotations

from typing import Any

import pytest

from pipelines.spec import DeclarationError, validate


def _decl(**merge: Any) -> dict[str, Any]:
    return {
        "pipeline": "m",
        "stages": {
            "world": {"kind": "world"},
            "base": {"kind": "pretrain", "data": "world"},
            "a": {"kind": "recover", "model": "base", "data": "world"},
            "b": {"kind": "recover", "model": "base", "data": "world"},
            "c": {"kind": "recover", "model": "base", "data": "world"},
            "merge": {"kind": "merge", **merge},
        },
    }


def _issues(**merge: Any) -> list[str]:
    with pytest.raises(DeclarationError) as err:
        validate(_decl(**merge))
    return [str(i) for i in err.value.issues]


def test_valid_declarations():
    validate(_decl(method="linear", models=["a", "b"], weight={"a": 0.3, "b": 0.7}))
    validate(
        _decl(
            method="ties",
            models=["a", "b", "c"],
            base="base",
            density={"a": 0.5, "b": 1.0, "c": 0.2},
            **{"lambda": 0.9},
        )
    )
    validate(_decl(method="slerp", models=["a", "b"], t=0.5))
    validate(_decl(method="pcb", models=["a", "b"], base="base", density=0.2))


def test_method_is_required_and_checked():
    assert any("merge.method: required" in i for i in _issues(models=["a", "b"]))
    got = _issues(method="tie", models=["a", "b"])
    assert any("did you mean 'ties'" in i for i in got)


@pytest.mark.parametrize("d", [0, 1.5, -0.1])
def test_density_outside_zero_one(d):
    got = _issues(method="ties", models=["a", "b"], base="base", density=d)
    assert got == [f"stages.merge.density: must be in (0, 1] (got {float(d)})"]


def test_density_mapping_names_the_model():
    got = _issues(
        method="dare_ties", models=["a", "b"], base="base", density={"a": 0.5, "b": 2}
    )
    assert got == ["stages.merge.density: must be in (0, 1] (got 2.0 for model 'b')"]


def test_weight_mapping_checked_against_models():
    got = _issues(method="linear", models=["a", "b"], weight={"a": 1, "bb": 1})
    assert got == [
        "stages.merge.weight: 'bb' is not one of models (a, b); did you mean 'b'?"
    ]
    got = _issues(method="linear", models=["a", "b"], weight={"a": 1})
    assert got[0].startswith("stages.merge.weight: no value for model 'b'")


def test_task_vector_method_without_base():
    for method in ("task_arithmetic", "ties", "dare_linear", "dare_ties", "pcb"):
        got = _issues(method=method, models=["a", "b"])
        assert got == [
            "stages.merge.base: required field is missing (Upstream stage whose "
            "model the task vectors are taken against (mergekit's base_model).)"
        ], method


def test_base_listed_among_models():
    got = _issues(method="ties", models=["a", "base"], base="base")
    assert got[0].startswith("stages.merge.base: 'base' is also listed in models")


def test_slerp_with_three_models():
    got = _issues(method="slerp", models=["a", "b", "c"], t=0.5)
    assert got[0].startswith("stages.merge.models: slerp merges exactly two models")


def test_linear_has_no_base_and_slerp_no_weight():
    got = _issues(method="linear", models=["a", "b"], base="base")
    assert any("stages.merge.base: unknown key 'base'" in i for i in got)
    got = _issues(method="slerp", models=["a", "b"], t=0.5, weight=1)
    assert any("stages.merge.weight: unknown key 'weight'" in i for i in got)


def test_inputs_must_be_models():
    got = _issues(method="linear", models=["a", "world"])
    assert any("stages.merge.models[1]: 'world' (world) outputs" in i for i in got)


def test_bad_resparsify_pattern():
    got = _issues(method="linear", models=["a", "b"], resparsify={"pattern": "4:2"})
    assert any(i.startswith("stages.merge.resparsify.pattern") for i in got)


def test_a_merge_of_one_model_is_refused_before_anything_runs():
    """One model merged is that model: refused when the graph is built, also
    when the one model is the single variant of a swept stage."""
    from pipelines.graph import build

    with pytest.raises(DeclarationError) as err:
        build(validate(_decl(method="linear", models=["a"])))
    (issue,) = [str(i) for i in err.value.issues]
    assert issue.startswith("stages.merge.models: merge: a merge needs two or more")
    assert "got 1 (a)" in issue
    swept = _decl(method="linear", models=["a"])
    swept["stages"]["a"]["seeds"] = [0]
    with pytest.raises(DeclarationError, match=r"got 1 \(a@s0\)"):
        build(validate(swept))
    swept["stages"]["a"]["seeds"] = [0, 1]  # two variants: a real merge
    graph = build(validate(swept))
    assert graph.nodes["merge"].inputs["models"] == ["a@s0", "a@s1"]
