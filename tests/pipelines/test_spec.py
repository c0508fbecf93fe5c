"""Declaration validation: every error found at once, each with its YAML path."""

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipelines.spec import DeclarationError, load, validate

ROOT = Path(__file__).resolve().parents[2]
GOOD = {
    "pipeline": "t",
    "seed": 0,
    "stages": {
        "world": {"kind": "world"},
        "base": {"kind": "pretrained", "path": "/models/x"},
        "prune": {
            "kind": "prune",
            "method": "magnitude",
            "model": "base",
            "sparsity": 0.5,
        },
        "select": {
            "kind": "select",
            "method": "random",
            "pool": "world",
            "budget": 0.2,
        },
        "recover": {
            "kind": "recover",
            "method": "full",
            "model": "prune",
            "data": "select",
        },
    },
}


def mutate(fn):
    d = copy.deepcopy(GOOD)
    fn(d)
    return d


def st(d):
    return d["stages"]


BAD = [
    # (id, mutation, yaml path, message fragment)
    (
        "top-level typo",
        lambda d: d.update(stagess={}),
        "stagess",
        "did you mean 'stages'",
    ),
    (
        "unknown kind",
        lambda d: st(d)["prune"].update(kind="prun"),
        "stages.prune.kind",
        "did you mean 'prune'",
    ),
    (
        "missing kind",
        lambda d: st(d)["prune"].pop("kind"),
        "stages.prune.kind",
        "required",
    ),
    (
        "unknown method",
        lambda d: st(d)["prune"].update(method="magnitud"),
        "stages.prune.method",
        "did you mean 'magnitude'",
    ),
    (
        "unknown param",
        lambda d: st(d)["prune"].update(sparsty=0.5),
        "stages.prune.sparsty",
        "did you mean 'sparsity'",
    ),
    (
        "out of range",
        lambda d: st(d)["prune"].update(sparsity=1.5),
        "stages.prune.sparsity",
        "less than 1",
    ),
    (
        "wrong type",
        lambda d: st(d)["prune"].update(sparsity="half"),
        "stages.prune.sparsity",
        "valid number",
    ),
    (
        "unknown input",
        lambda d: st(d)["prune"].update(model="bse"),
        "stages.prune.model",
        "no stage named 'bse'; did you mean 'base'",
    ),
    (
        "wrong artifact kind",
        lambda d: st(d)["recover"].update(data="prune"),
        "stages.recover.data",
        "outputs model, but a dataset is needed",
    ),
    (
        "self input",
        lambda d: st(d)["prune"].update(model="prune"),
        "stages.prune.model",
        "cannot consume its own output",
    ),
    (
        "cycle",
        lambda d: st(d)["base"].update(
            kind="recover", method="full", model="recover", data="select", path=None
        ),
        "stages.",
        "dependency cycle",
    ),
    (
        "missing required input",
        lambda d: st(d)["select"].pop("pool"),
        "stages.select.pool",
        "required",
    ),
    (
        "matrix over unknown param",
        lambda d: st(d)["select"].update(matrix={"budgt": [0.1, 0.2]}),
        "stages.select.matrix.budgt",
        "did you mean 'budget'",
    ),
    (
        "seeds not ints",
        lambda d: st(d)["select"].update(seeds=["a"]),
        "stages.select.seeds",
        "list of ints",
    ),
    (
        "reserved char in name",
        lambda d: st(d).update({"a@b": {"kind": "world"}}),
        "stages.a@b",
        "'@' marks variants",
    ),
    ("missing pipeline name", lambda d: d.pop("pipeline"), "pipeline", "required"),
    (
        "budget out of range",
        lambda d: st(d)["select"].update(budget=-1),
        "stages.select.budget",
        "must be >= 1",
    ),
]


@pytest.mark.parametrize("case", BAD, ids=[b[0] for b in BAD])
def test_bad_declaration_names_path_and_fix(case):
    _, fn, path, fragment = case
    d = mutate(fn)
    d["stages"] = {
        k: {kk: vv for kk, vv in v.items() if vv is not None}
        for k, v in d.get("stages", {}).items()
    }
    with pytest.raises(DeclarationError) as err:
        validate(d)
    hits = [
        i for i in err.value.issues if i.path.startswith(path) and fragment in i.message
    ]
    assert hits, f"expected {path}: ...{fragment}... in:\n{err.value}"


def test_good_declaration_validates():
    assert set(validate(GOOD).stages) == set(GOOD["stages"])


def test_all_errors_reported_together():
    d = mutate(
        lambda d: (
            st(d)["prune"].update(sparsity=2, method="magnitude", bogus=1),
            st(d)["select"].update(pool="nope"),
        )
    )
    with pytest.raises(DeclarationError) as err:
        validate(d)
    paths = {i.path for i in err.value.issues}
    assert {
        "stages.prune.sparsity",
        "stages.prune.bogus",
        "stages.select.pool",
    } <= paths


def test_cli_validate_exit_codes_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        yaml.safe_dump(
            mutate(lambda d: st(d)["prune"].update(sparsity=3, method="wand"))
        )
    )
    carp = [sys.executable, "-m", "pipelines.cli", "validate"]
    res = subprocess.run(carp + [str(bad)], capture_output=True, text=True, cwd=ROOT)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "stages.prune.method" in res.stderr and "did you mean 'wanda'" in res.stderr
    ok = subprocess.run(
        carp + ["params.yaml"], capture_output=True, text=True, cwd=ROOT
    )
    assert ok.returncode == 0, ok.stderr


def test_invalid_yaml_names_the_line(tmp_path):
    f = tmp_path / "x.yaml"
    f.write_text("pipeline: a\nstages:\n  w: {kind: world\n")
    with pytest.raises(DeclarationError) as err:
        load(f)
    assert "line" in err.value.issues[0].path


def all_pipeline_files():
    return [
        ROOT / "params.yaml",
        *sorted((ROOT / "pipelines" / "presets").glob("*.yaml")),
    ]


@pytest.mark.parametrize("path", all_pipeline_files(), ids=lambda p: p.name)
def test_every_pipeline_file_in_the_repo_validates(path):
    load(path)


def test_matrix_may_sweep_the_method_itself():
    d = mutate(
        lambda d: st(d)["select"].update(
            matrix={"method": ["paser", "random"]}, model="prune", reference="base"
        )
    )
    del d["stages"]["select"]["method"]
    decl = validate(d)
    variants = dict(decl.stages["select"].variants)
    assert set(variants) == {"paser", "random"}
    assert type(variants["paser"]).__module__ == "stages.select.paser"
    assert type(variants["random"]).__module__ == "stages.select.random"


def test_input_of_an_invalid_stage_is_still_kind_checked():
    d = mutate(
        lambda d: (
            st(d)["prune"].update(sparsity=1.5),
            st(d)["recover"].update(data="prune"),
        )
    )
    with pytest.raises(DeclarationError) as err:
        validate(d)
    msgs = {i.path: i.message for i in err.value.issues}
    assert "stages.prune.sparsity" in msgs
    assert "a dataset is needed" in msgs["stages.recover.data"]


def test_pipeline_template_is_inherited_by_stages_that_render_records():
    from pipelines.spec import validate

    decl = {
        "pipeline": "t",
        "template": "alpaca",
        "stages": {
            "w": {"kind": "world"},
            "s": {"kind": "select", "method": "random", "pool": "w", "budget": 0.5},
            "own": {
                "kind": "select",
                "method": "random",
                "pool": "w",
                "budget": 0.5,
                "template": "carp",
            },
        },
    }
    d = validate(decl)
    assert d.stages["s"].variants[0][1].template == "alpaca"
    assert d.stages["s"].inherits == ("seed", "template")
    assert d.stages["own"].variants[0][1].template == "carp"
    assert d.stages["own"].inherits == ("seed",)
    assert d.stages["w"].inherits == ("seed",)  # a world renders no template


def test_unknown_pipeline_template_is_named():
    import pytest

    from pipelines.spec import DeclarationError, validate

    with pytest.raises(DeclarationError, match="template: unknown template 'alpca'"):
        validate(
            {"pipeline": "t", "template": "alpca", "stages": {"w": {"kind": "world"}}}
        )
