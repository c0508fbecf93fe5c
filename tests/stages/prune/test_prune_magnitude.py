"""Magnitude pruning: exact zero counts per layer / row / globally, N:M blocks,
masks on disk that match the zeros, and a checkpoint that loads."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pipelines.contract import RunContext
from stages.prune import run
from stages.prune.magnitude import Params

torch.set_num_threads(1)


def _run(tiny_model_dir, tmp_path, **kw):
    params = Params(model="base", **kw)
    out = tmp_path / "prune"
    out.mkdir()
    res = run(params, {"model": tiny_model_dir}, out, RunContext())
    return res, out


def _weights(out):
    from stages.common.io import load_model

    model = load_model(out)
    return model, {n: p.data for n, p in model.named_parameters()}


def test_layer_scope_exact_zeros_and_masks(tiny_model_dir, tmp_path):
    from stages.common.io import load_masks, load_model

    res, out = _run(tiny_model_dir, tmp_path, sparsity=0.5)
    model, w = _weights(out)
    masks = load_masks(out)
    assert "model.layers.0.mlp.up_proj.weight" in masks
    assert len(masks) == 2 * 7  # q k v o gate up down per block
    for name, keep in masks.items():
        assert keep.dtype == torch.bool
        assert int((w[name] == 0).sum()) == w[name].numel() // 2
        assert torch.equal(w[name] != 0, keep)
    base = dict(load_model(tiny_model_dir).named_parameters())
    assert torch.equal(w["lm_head.weight"], base["lm_head.weight"].data)
    assert torch.equal(
        w["model.embed_tokens.weight"], base["model.embed_tokens.weight"]
    )
    # kept weights are unchanged (magnitude does no update)
    n = "model.layers.1.self_attn.q_proj.weight"
    assert torch.equal(w[n][masks[n]], base[n].data[masks[n]])
    assert res.metrics["sparsity"] == pytest.approx(0.5)
    assert res.metrics["sparsity.layer_1"] == pytest.approx(0.5)
    assert res.metrics["params_before"] == res.metrics["params_after"]
    assert res.metrics["peak_rss_mb"] > 0 and res.metrics["time_s"] > 0
    assert res.extra_manifest["masks_file"] == "masks.safetensors"


def test_row_scope_exact_per_row(tiny_model_dir, tmp_path):
    _, out = _run(tiny_model_dir, tmp_path, sparsity=0.3, scope="row")
    _, w = _weights(out)
    wq = w["model.layers.0.self_attn.q_proj.weight"]
    zeros_per_row = (wq == 0).sum(1)
    assert torch.all(zeros_per_row == int(wq.shape[1] * 0.3))


def test_global_scope_exact_total_uneven_layers(tiny_model_dir, tmp_path):
    res, out = _run(tiny_model_dir, tmp_path, sparsity=0.6, scope="global")
    _, w = _weights(out)
    names = [n for n in w if ".layers." in n and n.endswith("proj.weight")]
    zeros = sum(int((w[n] == 0).sum()) for n in names)
    total = sum(w[n].numel() for n in names)
    assert zeros == int(total * 0.6)
    # the threshold is shared: every kept |w| >= every pruned |w| of the base
    from stages.common.io import load_model

    base = dict(load_model(tiny_model_dir).named_parameters())
    kept = torch.cat([base[n].data[w[n] != 0].abs() for n in names])
    pruned = torch.cat([base[n].data[w[n] == 0].abs() for n in names])
    assert kept.min() >= pruned.max()


def test_global_threshold_ties_exact():
    from stages.prune.kernels import keep_masks_global_abs

    ws = {"a": torch.tensor([[1.0, 1.0, 2.0, 0.5]]), "b": torch.tensor([[1.0, 3.0]])}
    masks = keep_masks_global_abs(ws, 0.5)  # prune 3 of 6: 0.5 and two of the 1.0s
    assert sum(int((~m).sum()) for m in masks.values()) == 3
    assert not masks["a"][0, 3] and masks["a"][0, 2] and masks["b"][0, 1]


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "1:4"])
def test_nm_exactly_n_per_block(tiny_model_dir, tmp_path, pattern):
    n, m = (int(x) for x in pattern.split(":"))
    res, out = _run(tiny_model_dir, tmp_path, pattern=pattern)
    _, w = _weights(out)
    for name, t in w.items():
        if ".layers." in name and name.endswith("proj.weight"):
            blocks = (t != 0).reshape(t.shape[0], -1, m).sum(-1)
            assert torch.all(blocks == n), name
    assert res.metrics["sparsity"] == pytest.approx(1 - n / m)
    assert res.extra_manifest["nm"] == [n, m]


def test_include_exclude_and_lm_head(tiny_model_dir, tmp_path):
    from stages.common.io import load_masks

    _, out = _run(tiny_model_dir, tmp_path, include=["*mlp*", "lm_head"], exclude=[])
    masks = load_masks(out)
    assert "lm_head.weight" in masks
    assert not any("self_attn" in k for k in masks)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"pattern": "4:2"}, "1 <= N < M"),
        ({"pattern": "4:4"}, "keeps N of every M"),
        ({"pattern": "0:4"}, "prune_n"),
        ({"pattern": "2-4"}, "N:M like"),
        ({"pattern": "2:4", "sparsity": 0.3}, "implies sparsity 0.5"),
        ({"pattern": "2:4", "scope": "global"}, "scope"),
        ({"sparsity": 1.0}, "sparsity"),
        ({"nonsense": 1}, "nonsense"),
    ],
)
def test_params_validation_names_field(kw, field):
    with pytest.raises(ValidationError, match=field):
        Params(model="base", **kw)


def test_no_selection_is_a_clear_error(tiny_model_dir, tmp_path):
    with pytest.raises(ValueError, match="include"):
        _run(tiny_model_dir, tmp_path, include=["nothing*"])


def test_tied_lm_head_is_refused(tmp_path):
    from tests.tiny import WIDE_INIT_STD, char_tokenizer, tiny_llama, write_checkpoint

    model = tiny_llama(init_std=WIDE_INIT_STD)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    src = tmp_path / "tied"
    write_checkpoint(model, char_tokenizer(), src)
    with pytest.raises(ValueError, match="tied"):
        _run(src, tmp_path, include=["*"], exclude=[])


def test_packed_masks_stream_to_standard_safetensors(tmp_path):
    from safetensors.torch import load_file

    from stages.prune.maskio import pack, write_masks

    g = torch.Generator().manual_seed(0)
    masks = {
        "b.weight": torch.rand(7, 13, generator=g)
        > 0.5,  # 91 bits: not a byte multiple
        "a.weight": torch.rand(3, 8, generator=g) > 0.3,
        "c.weight": torch.ones(1, 1, dtype=torch.bool),
    }
    write_masks({k: pack(v) for k, v in masks.items()}, tmp_path / "m.safetensors")
    back = load_file(str(tmp_path / "m.safetensors"))
    assert set(back) == set(masks)
    for k, v in masks.items():
        assert back[k].dtype == torch.bool and torch.equal(back[k], v)
