"""Mask policies, N:M preservation and re-sparsification, on hand-made masks
and through the stage on sparse tiny checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from stages.merge import masks as M
from tests.stages.merge.common import expert, merge, write_checkpoint

A = torch.tensor([[True, True, False, False]])
B = torch.tensor([[True, False, True, False]])


def test_policies_on_hand_made_masks():
    assert torch.equal(M.policy_mask("base", [A, B], 1), B)
    assert torch.equal(M.policy_mask("base", [A, B], 0), A)
    assert M.policy_mask("intersection", [A, B], 0).tolist() == [[1, 0, 0, 0]]
    assert M.policy_mask("union", [A, B], 0).tolist() == [[1, 1, 1, 0]]
    assert M.policy_mask("none", [A, B], 0) is None
    # a dense input keeps everything: the union is dense, the intersection not
    assert M.policy_mask("union", [A, None], 0) is None
    assert torch.equal(M.policy_mask("intersection", [A, None], 0), A)
    assert M.policy_mask("base", [None, A], 0) is None


def test_detect_and_enforce_nm():
    two_four = torch.tensor([[1, 1, 0, 0, 0, 1, 0, 1]], dtype=torch.bool)
    assert M.detect_nm(two_four) == (2, 4)
    # 3 then 1 of 4 is not 2:4, but 4 of 8 is 4:8
    assert M.detect_nm(torch.tensor([[1, 1, 1, 0, 0, 0, 0, 1]]).bool()) == (4, 8)
    uneven = torch.tensor([[1, 1, 1, 0, 0, 0, 0, 0], [1, 1, 0, 0, 0, 0, 0, 0]])
    assert M.detect_nm(uneven.bool()) is None
    union = two_four | torch.tensor([[0, 0, 1, 1, 0, 0, 0, 0]]).bool()
    values = torch.tensor([[0.1, -5.0, 3.0, 0.2, 9.0, 1.0, 9.0, 2.0]])
    kept = M.enforce_nm(values, union, 2, 4)
    # block 1 keeps its two largest of the four allowed (|-5|, |3|); block 2
    # already had two (9.0 at index 4 was pruned by every input and stays out)
    assert kept.tolist() == [[False, True, True, False, False, True, False, True]]


def test_resparsify_layer_and_nm():
    v = torch.tensor([[4.0, -1.0, 3.0, 2.0, 0.5, -6.0, 0.1, 7.0]])
    keep = M.resparsify_mask(v, None, 0.5, None)
    assert keep.tolist() == [[True, False, True, False, False, True, False, True]]
    nm = M.resparsify_mask(v, None, 0.5, (1, 4))
    assert nm.tolist() == [[True, False, False, False, False, False, False, True]]
    # zeros imposed by a policy mask stay zero
    pol = torch.ones_like(v, dtype=torch.bool)
    pol[0, 7] = False
    assert not M.resparsify_mask(v, pol, 0.5, None)[0, 7]


def _nm_mask(w: torch.Tensor, n: int, m: int) -> torch.Tensor:
    from stages.prune.kernels import keep_mask_nm

    return keep_mask_nm(w.abs(), n, m)


@pytest.fixture(scope="module")
def sparse_family(tmp_path_factory) -> dict[str, Path]:
    """A 2:4 base and two experts whose 2:4 masks differ from the base's."""
    from tests.tiny import char_tokenizer, tiny_llama

    root = tmp_path_factory.mktemp("sparse")
    tok = char_tokenizer()
    base = tiny_llama(tok, seed=0, hidden=32, layers=2)
    out = {}
    for name, model in [
        ("base", base),
        ("e0", expert(base, 1, 0.05)),
        ("e1", expert(base, 2, 0.05)),
    ]:
        masks = {}
        with torch.no_grad():
            for pname, p in model.named_parameters():
                if p.dim() == 2 and ".layers." in pname:
                    masks[pname] = _nm_mask(p, 2, 4)
                    p.mul_(masks[pname])
        write_checkpoint(model, tok, root / name)
        from stages.common.io import save_masks

        save_masks(masks, root / name)
        out[name] = root / name
    return out


def _blocks_ok(w: torch.Tensor, n: int, m: int) -> bool:
    nz = (w != 0).reshape(w.shape[0], -1, m).sum(-1)
    return bool((nz <= n).all())


@pytest.mark.parametrize("policy", ["base", "intersection", "union"])
def test_nm_models_merge_to_nm(sparse_family, tmp_path, policy):
    inputs = {
        "models": [sparse_family["e0"], sparse_family["e1"]],
        "base": sparse_family["base"],
    }
    res = merge("ties", inputs, tmp_path / "o", density=0.7, mask=policy)
    out = load_file(str(tmp_path / "o" / "model.safetensors"))
    masks = load_file(str(tmp_path / "o" / "masks.safetensors"))
    base_masks = load_file(str(sparse_family["base"] / "masks.safetensors"))
    assert set(masks) == set(base_masks)
    for name, keep in masks.items():
        assert _blocks_ok(out[name], 2, 4), name
        assert not out[name][~keep].any(), name  # zeros where the mask says
        if policy == "base":
            assert torch.equal(keep, base_masks[name])
    assert res.extra_manifest["nm"] == ["2:4"]
    assert res.metrics["sparsity"] >= 0.5  # at most 2 of every 4 kept
    assert "sparsity.layer_0" in res.metrics
    assert res.extra_manifest["sparsity_per_module"]


def test_mask_none_is_dense_and_writes_no_masks(sparse_family, tmp_path):
    inputs = {
        "models": [sparse_family["e0"], sparse_family["e1"]],
        "base": sparse_family["base"],
    }
    res = merge("task_arithmetic", inputs, tmp_path / "o", mask="none")
    assert not (tmp_path / "o" / "masks.safetensors").exists()
    assert res.metrics["sparsity"] < 0.3


def test_resparsify_dense_merge_to_two_four(sparse_family, tmp_path):
    inputs = {"models": [sparse_family["e0"], sparse_family["e1"]]}
    merge(
        "linear",
        inputs,
        tmp_path / "o",
        mask="none",
        resparsify={"sparsity": 0.5, "pattern": "2:4"},
    )
    out = load_file(str(tmp_path / "o" / "model.safetensors"))
    masks = load_file(str(tmp_path / "o" / "masks.safetensors"))
    for name, keep in masks.items():
        assert M.detect_nm(keep) == (2, 4), name
        assert _blocks_ok(out[name], 2, 4)
