"""The merge stage on tiny checkpoints: results equal the kernels applied to
the loaded state dicts, output loads, and every compatibility error is raised
before compute naming the stage and the model."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stages.merge import kernels as K
from stages.merge.inputs import MergeError
from tests.stages.merge.common import build_family, merge


def _sd(folder: Path) -> dict[str, torch.Tensor]:
    return load_file(str(folder / "model.safetensors"))


@pytest.mark.parametrize(
    ("method", "kw"),
    [
        ("linear", {"weight": {"e0": 1.0, "e1": 3.0}}),
        ("task_arithmetic", {"weight": 0.5, "lambda": 0.8}),
        ("ties", {"density": {"e0": 0.5, "e1": 0.7}, "weight": 1.0}),
    ],
)
def test_merge_matches_the_kernels(family, tmp_path, method, kw):
    inputs = {"models": [family["e0"], family["e1"]]}
    if method != "linear":
        inputs["base"] = family["base"]
    res = merge(method, inputs, tmp_path / "out", **kw)
    out, a, b, base = (
        _sd(p) for p in (tmp_path / "out", family["e0"], family["e1"], family["base"])
    )
    assert set(out) == set(a)
    for name, t in out.items():
        if method == "linear":
            want = K.linear(
                torch.stack([a[name], b[name]]), torch.tensor([1.0, 3.0]), True
            )
        elif method == "task_arithmetic":
            d = torch.stack([a[name] - base[name], b[name] - base[name]])
            want = base[name] + 0.8 * 0.5 * d.sum(0)
        else:
            d = torch.stack(
                [
                    K.magnitude_trim(a[name] - base[name], 0.5),
                    K.magnitude_trim(b[name] - base[name], 0.7),
                ]
            )
            want = base[name] + K.combine_deltas(d, torch.ones(2), True, True, 1.0)
        assert torch.allclose(t, want, atol=1e-6), name
    assert res.extra_manifest["models"] == ["e0", "e1"]
    assert (tmp_path / "out" / "config.json").exists()
    assert (tmp_path / "out" / "tokenizer.json").exists()


def test_merged_checkpoint_loads_and_runs(family, tmp_path):
    from stages.common.io import load_model

    merge("slerp", {"models": [family["e0"], family["e1"]]}, tmp_path / "o", t=0.3)
    model = load_model(tmp_path / "o")
    logits = model(input_ids=torch.tensor([[1, 5, 9]])).logits
    assert torch.isfinite(logits).all()


def test_dare_is_reproducible_by_seed(family, tmp_path):
    inputs = {"models": [family["e0"], family["e1"]], "base": family["base"]}
    merge("dare_ties", inputs, tmp_path / "a", density=0.5)
    merge("dare_ties", inputs, tmp_path / "b", density=0.5)
    a, b = _sd(tmp_path / "a"), _sd(tmp_path / "b")
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert (tmp_path / "a" / "model.safetensors").read_bytes() == (
        tmp_path / "b" / "model.safetensors"
    ).read_bytes()


@pytest.mark.parametrize("method", ["dare_linear", "pcb"])
def test_other_task_vector_methods_run(family, tmp_path, method):
    inputs = {
        "models": [family["e0"], family["e1"], family["e2"]],
        "base": family["base"],
    }
    res = merge(method, inputs, tmp_path / "o", density=0.5)
    out, base = _sd(tmp_path / "o"), _sd(family["base"])
    moved = sum(float((out[k] - base[k]).abs().sum()) for k in out)
    assert moved > 0
    assert res.metrics["models"] == 3


# --- compatibility errors, raised before anything is written ------------------


def _expect(tmp_path, inputs, method, match, **kw):
    with pytest.raises(MergeError, match=match) as err:
        merge(method, inputs, tmp_path / "out", **kw)
    assert "stage 'merge'" in str(err.value)
    assert not (tmp_path / "out" / "model.safetensors").exists()


def test_shape_mismatch_names_model_and_tensor(family, tmp_path):
    wide = build_family(tmp_path / "wide", n_experts=0, intermediate=96)["base"]
    _expect(
        tmp_path,
        {"models": [family["e0"], wide]},
        "linear",
        r"model 'base' .* differs from 'e0'.*mlp\..*shape",
    )


def test_vocabulary_mismatch(family, tmp_path):
    odd = tmp_path / "odd"
    shutil.copytree(family["e1"], odd)
    tok = json.loads((odd / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    a, b = "a", "b"
    vocab[a], vocab[b] = vocab[b], vocab[a]  # same size, different ids
    (odd / "tokenizer.json").write_text(json.dumps(tok))
    _expect(
        tmp_path, {"models": [family["e0"], odd]}, "linear", "model 'odd'.*vocabular"
    )


def test_architecture_mismatch(family, tmp_path):
    odd = tmp_path / "mistral"
    shutil.copytree(family["e1"], odd)
    cfg = json.loads((odd / "config.json").read_text())
    cfg["architectures"], cfg["model_type"] = ["MistralForCausalLM"], "mistral"
    (odd / "config.json").write_text(json.dumps(cfg))
    _expect(
        tmp_path, {"models": [family["e0"], odd]}, "linear", "'mistral'.*architecture"
    )


def test_missing_tensor(family, tmp_path):
    from safetensors.torch import save_file

    odd = tmp_path / "short"
    shutil.copytree(family["e1"], odd)
    sd = _sd(odd)
    sd.pop("lm_head.weight")
    save_file(sd, str(odd / "model.safetensors"))
    _expect(tmp_path, {"models": [family["e0"], odd]}, "linear", "short.*lacks lm_head")


def test_one_model_or_three_for_slerp(family, tmp_path):
    _expect(tmp_path, {"models": [family["e0"]]}, "linear", "two or more models")
    # a swept stage can bring three variants to a slerp declared with one name
    from pipelines.contract import RunContext
    from stages.merge import METHODS, run

    params = METHODS.load("slerp").Params(models=["e"], t=0.5)
    with pytest.raises(MergeError, match="slerp merges exactly two"):
        run(
            params,
            {"models": [family["e0"], family["e1"], family["e2"]]},
            tmp_path / "s",
            RunContext(name="merge"),
        )


def test_bin_checkpoints_refused(tmp_path, family):
    odd = tmp_path / "bin"
    odd.mkdir()
    (odd / "pytorch_model.bin").write_bytes(b"x")
    _expect(tmp_path, {"models": [family["e0"], odd]}, "linear", "safetensors only")
