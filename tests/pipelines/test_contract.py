"""The typed stage contract: Kind descriptions, one Registry, method-level inputs."""

import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.contract import Kind, Registry, RegistryError, StageParams, UnknownName
from pipelines.graph import build
from pipelines.kinds import KINDS, load_kind
from pipelines.spec import DeclarationError, validate

ROOT = Path(__file__).resolve().parents[2]


def issues(stages):
    with pytest.raises(DeclarationError) as err:
        validate({"pipeline": "t", "stages": stages})
    return {i.path: i.message for i in err.value.issues}


WORLD = {"world": {"kind": "world"}, "base": {"kind": "pretrain", "data": "world"}}


@pytest.mark.parametrize("name", list(KINDS))
def test_every_kind_is_a_kind_and_every_method_loads_checked(name):
    kind = load_kind(name)
    assert isinstance(kind, Kind) and kind.name == name
    assert kind.default_method is None or kind.default_method in kind.methods
    for method in kind.methods:
        cls = kind.params_class(method)
        assert issubclass(cls, kind.params)
        assert cls.model_config["extra"] == "forbid"
        for field, info in cls.model_fields.items():
            assert info.description, f"{name}/{method}.{field} has no description"


def test_registry_refuses_a_module_without_params_or_entry():
    reg = Registry("toy method", {"bad": "pipelines.contract"}, base=StageParams)
    with pytest.raises(RegistryError, match="must define Params"):
        reg.load("bad")
    reg = Registry("toy method", {"bad": "_toy.source"}, entry="nope")
    with pytest.raises(RegistryError, match="function nope"):
        reg.load("bad")


def test_registry_did_you_mean_is_one_implementation():
    with pytest.raises(UnknownName, match="did you mean 'wanda'"):
        load_kind("prune").method("wand")
    with pytest.raises(UnknownName, match="did you mean 'prune'"):
        load_kind("prnue")
    from stages.evaluate import SUITES
    from stages.world.families import FAMILIES

    assert "did you mean 'facts'" in FAMILIES.unknown("fact")
    assert "known families:" in FAMILIES.unknown("fact")
    assert "did you mean 'perplexity'" in SUITES.unknown("perplexty")


def test_paser_without_model_or_reference_fails_validation_naming_both():
    found = issues(
        {
            **WORLD,
            "sel": {
                "kind": "select",
                "method": "paser",
                "pool": "world",
                "budget": 0.2,
            },
        }
    )
    assert "stages.sel.model" in found and "stages.sel.reference" in found


def test_cli_validate_names_the_missing_model(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text(
        "pipeline: t\nstages:\n  world: {kind: world}\n"
        "  sel: {kind: select, method: paser, pool: world, budget: 0.2}\n"
    )
    res = subprocess.run(
        [sys.executable, "-m", "pipelines.cli", "validate", str(f)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert res.returncode == 2 and "stages.sel.model" in res.stderr
    assert "Traceback" not in res.stderr


def test_method_inputs_are_kind_checked_per_method():
    found = issues(
        {
            **WORLD,
            "sel": {
                "kind": "select",
                "method": "perplexity",
                "pool": "world",
                "model": "world",
                "budget": 0.2,
            },
        }
    )
    assert "a model is needed" in found["stages.sel.model"]
    # an input a method does not read is an unknown key, not a silent dep
    found = issues(
        {
            **WORLD,
            "sel": {
                "kind": "select",
                "method": "random",
                "pool": "world",
                "model": "base",
                "budget": 0.2,
            },
        }
    )
    assert "unknown key 'model'" in found["stages.sel.model"]


def test_magnitude_reads_calibration_only_for_owl_and_wanda_needs_it():
    prune = {"kind": "prune", "model": "base"}
    # uniform magnitude ignores a given calib (a method sweep may share it) ...
    mag = {**prune, "method": "magnitude", "calib": "world"}
    validate({"pipeline": "t", "stages": {**WORLD, "p": mag}})  # no error
    # ... and OWL's outlier ratios need it
    owl = {**prune, "method": "magnitude", "profile": "owl"}
    found = issues({**WORLD, "p": owl})
    assert "calibration data" in found["stages.p.calib"]
    found = issues({**WORLD, "p": {**prune, "method": "wanda"}})
    assert "stages.p.calib" in found
    found = issues({**WORLD, "p": {**prune, "method": "width", "importance": "taylor"}})
    assert "needs calibration data" in found["stages.p.calib"]
    graph = build(
        validate(
            {
                "pipeline": "t",
                "stages": {**WORLD, "p": {**prune, "method": "magnitude"}},
            }
        )
    )
    assert graph.nodes["p"].upstream == ["base"]


def test_distill_needs_a_teacher_and_full_takes_none():
    rec = {"kind": "recover", "model": "base", "data": "world"}
    assert "stages.r.teacher" in issues({**WORLD, "r": {**rec, "method": "distill"}})
    found = issues({**WORLD, "r": {**rec, "method": "full", "teacher": "base"}})
    assert "unknown key 'teacher'" in found["stages.r.teacher"]


def test_adapter_input_accepted_only_from_a_stage_that_saves_one(toy_kinds):
    KINDS.register("toyadapt", "_toy.adapter:KIND")
    try:
        rec = {"kind": "recover", "model": "base", "data": "world"}
        ok = {
            **WORLD,
            "r": {**rec, "method": "lora", "save_adapter": True},
            "use": {"kind": "toyadapt", "adapter": "r"},
        }
        validate({"pipeline": "t", "stages": ok})
        bad = {**ok, "r": {**rec, "method": "lora"}}
        assert "an adapter is needed" in issues(bad)["stages.use.adapter"]
        assert load_kind("recover").outputs() == frozenset({"model"})
    finally:
        KINDS.unregister("toyadapt")


def test_method_sweep_gives_each_method_only_the_inputs_it_reads():
    decl = validate(
        {
            "pipeline": "t",
            "stages": {
                **WORLD,
                "prune": {"kind": "prune", "model": "base"},
                "sel": {
                    "kind": "select",
                    "pool": "world",
                    "model": "prune",
                    "reference": "base",
                    "budget": 0.1,
                    "matrix": {"method": ["paser", "perplexity", "random"]},
                },
            },
        }
    )
    nodes = build(decl).nodes
    assert nodes["sel@paser"].inputs == {
        "pool": "world",
        "model": "prune",
        "reference": "base",
    }
    assert nodes["sel@perplexity"].inputs == {"pool": "world", "model": "prune"}
    assert nodes["sel@random"].inputs == {"pool": "world"}
    # a key that no swept method accepts is still an error
    found = issues(
        {
            **WORLD,
            "sel": {
                "kind": "select",
                "pool": "world",
                "budgte": 0.1,
                "matrix": {"method": ["random", "full"]},
            },
        }
    )
    assert any("unknown key 'budgte'" in m for m in found.values())


def test_validate_does_not_import_torch(tmp_path):
    code = (
        "import sys; from pipelines.cli import main; "
        "main(['validate', 'pipelines/presets/selection-study.yaml']); "
        "main(['compile', 'params.yaml', '--check']); "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
