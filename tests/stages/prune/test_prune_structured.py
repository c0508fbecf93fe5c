"""Width and depth pruning: outputs load, carry the parameter count their config
implies, and removing zero-influence structures leaves the logits unchanged."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError

from pipelines.contract import RunContext
from stages.common.io import load_model
from stages.prune import run
from tests.tiny import WIDE_INIT_STD, char_tokenizer, tiny_llama, write_checkpoint

torch.set_num_threads(1)
CAL = {"nsamples": 4, "seqlen": 32, "batch_size": 4}
IDS = torch.randint(4, 100, (2, 24), generator=torch.Generator().manual_seed(1))


def _logits(model):
    with torch.no_grad():
        return model(IDS, use_cache=False).logits


def _implied_params(config) -> int:
    from transformers import AutoModelForCausalLM

    with torch.device("meta"):
        return sum(
            p.numel() for p in AutoModelForCausalLM.from_config(config).parameters()
        )


def _run(method, model_dir, calib_dir, tmp_path, **kw):
    import importlib

    cls = importlib.import_module(f"stages.prune.{method}").Params
    reads_calib = method == "depth" or kw.get("importance") == "taylor"
    calib = {"calib": "world"} if reads_calib else {}
    params = cls(model="base", **calib, **CAL, **kw)
    out = tmp_path / method
    out.mkdir()
    inputs = {"model": model_dir, **({"calib": calib_dir} if reads_calib else {})}
    res = run(params, inputs, out, RunContext())
    return res, out, load_model(out)


def _save(model, tmp_path, name="src"):
    d = tmp_path / name
    return write_checkpoint(model, char_tokenizer(), d)


def _check_loaded(res, out, pruned):
    n = sum(p.numel() for p in pruned.parameters())
    assert n == _implied_params(pruned.config) == res.metrics["params_after"]
    assert not (out / "masks.safetensors").exists()


def test_depth_zero_blocks_reproduces_logits(tiny_model_dir, calib_dir, tmp_path):
    res, out, pruned = _run("depth", tiny_model_dir, calib_dir, tmp_path, blocks=0)
    assert torch.equal(_logits(pruned), _logits(load_model(tiny_model_dir)))
    assert res.metrics["blocks_removed"] == 0
    _check_loaded(res, out, pruned)


def test_depth_removes_identity_block(calib_dir, tmp_path):
    model = tiny_llama(init_std=WIDE_INIT_STD, layers=3)
    with torch.no_grad():  # block 1 adds nothing to the residual stream: BI = 0
        model.model.layers[1].self_attn.o_proj.weight.zero_()
        model.model.layers[1].mlp.down_proj.weight.zero_()
    src = _save(model, tmp_path)
    res, out, pruned = _run("depth", src, calib_dir, tmp_path, sparsity=0.3)
    assert res.extra_manifest["removed_blocks"] == [1]
    assert res.metrics["block_influence.layer_1"] == pytest.approx(0, abs=1e-6)
    assert res.metrics["block_influence.layer_0"] > 1e-3
    assert pruned.config.num_hidden_layers == 2
    assert [blk.self_attn.layer_idx for blk in pruned.model.layers] == [0, 1]
    torch.testing.assert_close(_logits(pruned), _logits(model))
    _check_loaded(res, out, pruned)
    assert res.metrics["params_removed_frac"] > 0
    with torch.no_grad():  # the renumbered blocks work with a KV cache
        pruned.generate(IDS[:1, :5], max_new_tokens=3, do_sample=False)


@pytest.mark.parametrize("importance", ["l1", "l2", "taylor"])
def test_width_removes_dead_heads_and_channels(calib_dir, tmp_path, importance):
    model = tiny_llama(  # head_dim 12, 2 q/kv
        init_std=WIDE_INIT_STD, hidden=96, heads=8, kv_heads=4, intermediate=128
    )
    dead_ch = torch.arange(0, 128, 4)  # 32 channels = 25%
    with torch.no_grad():
        for blk in model.model.layers:
            att, mlp = blk.self_attn, blk.mlp
            att.q_proj.weight[48:72] = 0  # kv group 2 = query heads 4, 5
            att.k_proj.weight[24:36] = 0
            att.v_proj.weight[24:36] = 0
            att.o_proj.weight[:, 48:72] = 0
            mlp.gate_proj.weight[dead_ch] = 0
            mlp.up_proj.weight[dead_ch] = 0
            mlp.down_proj.weight[:, dead_ch] = 0
    src = _save(model, tmp_path)
    res, out, pruned = _run(
        "width",
        src,
        calib_dir,
        tmp_path,
        sparsity=0.25,
        mlp_ratio=0.25,
        importance=importance,
    )
    cfg = pruned.config
    assert (cfg.num_attention_heads, cfg.num_key_value_heads) == (6, 3)
    assert (cfg.head_dim, cfg.intermediate_size) == (12, 96)
    assert res.extra_manifest["removed_kv_groups"] == {0: [2], 1: [2]}
    torch.testing.assert_close(_logits(pruned), _logits(model))
    _check_loaded(res, out, pruned)
    keep = torch.ones(128, dtype=torch.bool)
    keep[dead_ch] = False
    up = model.model.layers[0].mlp.up_proj.weight
    assert torch.equal(pruned.model.layers[0].mlp.up_proj.weight, up[keep])


def test_width_default_ratio_param_count(tiny_model_dir, calib_dir, tmp_path):
    res, out, pruned = _run("width", tiny_model_dir, calib_dir, tmp_path, sparsity=0.25)
    # 1 of 2 kv groups would leave 2 heads (64 % 2 == 0) but 0.5 groups is a tie,
    # which keeps both; the MLP then gives up 48 of 128 channels = 25% of a block
    assert pruned.config.num_key_value_heads == 2
    assert pruned.config.intermediate_size == 80
    _check_loaded(res, out, pruned)
    base = load_model(tiny_model_dir)
    blk = sum(p.numel() for p in base.model.layers.parameters() if p.dim() == 2)
    blk_after = sum(p.numel() for p in pruned.model.layers.parameters() if p.dim() == 2)
    assert 1 - blk_after / blk == pytest.approx(0.25, abs=0.01)


def test_plan_width_snaps_heads_to_divisors_of_hidden():
    from stages.prune.width import plan_width

    # Llama-2-7B shapes: 24 of 32 heads cannot divide 4096; ties keep 32 heads
    kv, ch = plan_width(4096, 32, 32, 128, 11008, 0.25, None, None)
    assert kv == 32
    block = 4096 * 128 * 4 * 32 + 3 * 4096 * 11008
    assert 3 * 4096 * (11008 - ch) / block == pytest.approx(0.25, abs=1e-3)
    # a GQA model where 25% of kv groups is feasible: 8 kv x 4 q heads, hidden 3072
    kv, ch = plan_width(3072, 32, 8, 96, 8192, 0.25, None, 0.25)
    assert (kv, ch) == (6, 6144) and 3072 % (6 * 4) == 0


@pytest.mark.parametrize(
    "method, kw, match",
    [
        ("width", {"pattern": "2:4"}, "pattern: width removes whole structures"),
        ("depth", {"pattern": "2:4"}, "pattern: depth"),
        ("width", {"importance": "l3"}, "importance"),
        ("depth", {"blocks": -1}, "blocks"),
    ],
)
def test_structured_params_validation(method, kw, match):
    import importlib

    with pytest.raises(ValidationError, match=match):
        cls = importlib.import_module(f"stages.prune.{method}").Params
        cls(model="base", calib="world", **kw)


def test_depth_all_blocks_is_a_clear_error(tiny_model_dir, calib_dir, tmp_path):
    with pytest.raises(ValueError, match="blocks: removing 2 of 2"):
        _run("depth", tiny_model_dir, calib_dir, tmp_path, blocks=2)
