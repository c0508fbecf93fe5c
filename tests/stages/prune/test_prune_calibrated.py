"""Wanda and SparseGPT: masks equal brute-force references, exact counts,
sequential block calibration, and SparseGPT's smaller reconstruction error."""

from __future__ import annotations

import pytest
import torch

from pipelines.contract import RunContext
from stages.prune import run
from stages.prune.kernels import keep_mask_layer
from stages.prune.magnitude import magnitude_masks
from stages.prune.sparsegpt import Hessian, sparsegpt_prune
from stages.prune.wanda import InputNorms, wanda_mask

torch.set_num_threads(1)
CAL = {"nsamples": 8, "seqlen": 32, "batch_size": 4}


def _layer(seed=0, rows=32, cols=64, tokens=1024):
    """A weight and correlated inputs whose feature scales differ widely, as
    LLM activations do (a few large-magnitude features)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(rows, cols, generator=g)
    mix = torch.randn(cols, cols, generator=g) / cols**0.5 + torch.eye(cols)
    scale = torch.exp(torch.randn(cols, generator=g))
    x = (torch.randn(tokens, cols, generator=g) @ mix) * scale
    return w, x


def _err(w, w2, x):
    return float(((w - w2) @ x.T).pow(2).sum())


def test_wanda_mask_equals_brute_force():
    w, x = _layer(rows=6, cols=12, tokens=50)
    acc = InputNorms(torch.nn.Linear(12, 6))
    acc.add(x[:20])
    acc.add(x[20:])  # accumulation over batches equals one pass
    got = wanda_mask(w, acc.sq, 0.5, None)
    for r in range(6):
        score = [abs(float(w[r, j])) * float(x[:, j].norm()) for j in range(12)]
        pruned = sorted(range(12), key=lambda j: score[j])[:6]
        assert [j for j in range(12) if not got[r, j]] == sorted(pruned)
    got_layer = wanda_mask(w, acc.sq, 0.5, None, scope="layer")
    score = (w.abs() * x.norm(dim=0)[None, :]).reshape(-1).tolist()
    pruned = sorted(range(72), key=lambda j: score[j])[:36]  # one group: the matrix
    assert sorted((~got_layer).reshape(-1).nonzero().squeeze(1).tolist()) == sorted(
        pruned
    )
    assert int((~got_layer).sum(1).max()) > 6  # rows are not equalised
    got_nm = wanda_mask(w, acc.sq, 0.5, (2, 4))
    for r in range(6):
        for b in range(0, 12, 4):
            score = [
                abs(float(w[r, j])) * float(x[:, j].norm()) for j in range(b, b + 4)
            ]
            kept = sorted(sorted(range(4), key=lambda j: -score[j])[:2])
            assert [j for j in range(4) if got_nm[r, b + j]] == kept


@pytest.mark.parametrize("nm", [None, (2, 4)])
def test_sparsegpt_error_below_wanda_below_magnitude(nm):
    w, x = _layer()
    acc_h, acc_n = Hessian(torch.nn.Linear(64, 32)), InputNorms(torch.nn.Linear(64, 32))
    acc_h.add(x)
    acc_n.add(x)
    w_sg, keep_sg = sparsegpt_prune(w, acc_h.value(), 0.5, nm, blocksize=32)
    w_wa = w * wanda_mask(w, acc_n.sq, 0.5, nm)
    w_mg = w * magnitude_masks({"w": w}, 0.5, "layer", nm)["w"]
    e_sg, e_wa, e_mg = _err(w, w_sg, x), _err(w, w_wa, x), _err(w, w_mg, x)
    assert e_sg < e_wa < e_mg
    assert torch.equal(w_sg != 0, keep_sg)
    if nm:
        assert torch.all(keep_sg.reshape(32, -1, 4).sum(-1) == 2)
    else:  # exact count in every 32-column block
        assert torch.all((~keep_sg).reshape(32, 2, 32).sum((0, 2)) == 32 * 16)


def test_sparsegpt_zero_sparsity_is_identity_and_dead_inputs():
    w, x = _layer()
    x[:, 3] = 0  # a dead input feature: its weights are dropped, H stays PD
    acc = Hessian(torch.nn.Linear(64, 32))
    acc.add(x)
    w2, keep = sparsegpt_prune(w, acc.value(), 0.0, None)
    assert keep.all()
    assert torch.all(w2[:, 3] == 0)
    assert torch.allclose(w2[:, :3], w[:, :3]) and torch.allclose(w2[:, 4:], w[:, 4:])


def _stage(method, tiny_model_dir, calib_dir, tmp_path, **kw):
    import importlib

    params = importlib.import_module(f"stages.prune.{method}").Params(
        model="base", calib="world", **CAL, **kw
    )
    out = tmp_path / method
    out.mkdir()
    res = run(params, {"model": tiny_model_dir, "calib": calib_dir}, out, RunContext())
    return res, out


def _linear_inputs(model, ids, names):
    """Inputs (tokens, in) seen by the named linears when ``model`` runs ids."""
    mods = dict(model.named_modules())
    got: dict[str, list] = {n: [] for n in names}
    hs = [
        mods[n].register_forward_hook(
            lambda _m, i, _o, n=n: got[n].append(i[0].reshape(-1, i[0].shape[-1]))
        )
        for n in names
    ]
    with torch.no_grad():
        model(ids, use_cache=False)
    for h in hs:
        h.remove()
    return {n: torch.cat(v) for n, v in got.items()}


def test_wanda_stage_matches_reference_block_by_block(
    tiny_model_dir, calib_dir, tmp_path
):
    from stages.common.io import load_masks, load_model, load_tokenizer
    from stages.prune.calib import Calibration

    res, out = _stage(
        "wanda", tiny_model_dir, calib_dir, tmp_path, calib_format="windows"
    )
    masks = load_masks(out)
    cal = Calibration(calib_dir, load_tokenizer(tiny_model_dir), 8, 32, 0, "windows")
    ids, _ = cal.samples("test")
    assert (
        res.extra_manifest["calibration"]["tokens_sha256"]
        == cal.fingerprint["tokens_sha256"]
    )
    base, pruned = load_model(tiny_model_dir), load_model(out)
    # block 0 sees the dense embeddings; block 1 sees the pruned block 0's outputs
    for model, name in [
        (base, "model.layers.0.self_attn.q_proj"),
        (base, "model.layers.0.self_attn.v_proj"),
        (pruned, "model.layers.1.self_attn.k_proj"),
    ]:
        x = _linear_inputs(model, ids, [name])[name]
        w = dict(base.named_modules())[name].weight.data
        ref = wanda_mask(w, x.pow(2).sum(0), 0.5, None)
        agree = (ref == masks[f"{name}.weight"]).float().mean()
        assert agree > 0.99, (name, float(agree))  # float summation-order ties only
    for name, keep in masks.items():
        wt = dict(pruned.named_parameters())[name].data
        assert torch.all((wt == 0).sum(1) == wt.shape[1] // 2)
        assert torch.equal(wt != 0, keep)
        base_w = dict(base.named_parameters())[name].data
        assert torch.equal(wt[keep], base_w[keep])  # Wanda does no weight update
    assert res.metrics["sparsity"] == pytest.approx(0.5)


def test_records_calibration_from_bos_padding_ignored(tiny_model_dir, calib_dir):
    """Records: one per sample, from BOS, capped at seqlen; statistics gathered
    over the padded batch equal those of each record run on its own."""
    from stages.common.io import load_model, load_tokenizer, read_dataset
    from stages.common.text import encode_example
    from stages.prune.calib import Calibration
    from stages.prune.layerwise import BlockRunner

    tok = load_tokenizer(tiny_model_dir)
    cal = Calibration(calib_dir, tok, 6, 100, 0)
    ids, valid = cal.samples("test")
    lengths = valid.sum(1)
    assert ids.shape[0] == 6 and torch.all(ids[:, 0] == tok.bos_token_id)
    assert int(lengths.max()) <= 100 and int(lengths.min()) < ids.shape[1]  # padded
    encoded = {tuple(encode_example(tok, r, 100)[0]) for r in read_dataset(calib_dir)}
    assert all(tuple(ids[i, : lengths[i]].tolist()) in encoded for i in range(6))
    assert cal.fingerprint["format"] == "records"
    assert cal.fingerprint["tokens"] == int(lengths.sum())

    model = load_model(tiny_model_dir)
    name = "model.layers.1.mlp.down_proj"
    runner = BlockRunner(model, ids, "cpu", 4, valid)
    runner.advance(0, runner.forward(runner.load(0)))
    lin = dict(model.named_modules())[name]
    got = runner.collect(runner.load(1), {name: lin}, InputNorms)[name].sq
    ref = sum(
        _linear_inputs(model, ids[i, : lengths[i]][None], [name])[name].pow(2).sum(0)
        for i in range(6)
    )
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_nm_stage(method, tiny_model_dir, calib_dir, tmp_path):
    from stages.common.io import load_masks, load_model

    res, out = _stage(method, tiny_model_dir, calib_dir, tmp_path, pattern="4:8")
    pruned = dict(load_model(out).named_parameters())
    for name, keep in load_masks(out).items():
        t = pruned[name].data
        assert torch.all((t != 0).reshape(t.shape[0], -1, 8).sum(-1) == 4), name
        assert torch.equal(t != 0, keep)
    assert res.extra_manifest["nm"] == [4, 8]


def test_sparsegpt_stage_updates_kept_weights(tiny_model_dir, calib_dir, tmp_path):
    from stages.common.io import load_masks, load_model

    res, out = _stage("sparsegpt", tiny_model_dir, calib_dir, tmp_path)
    base = dict(load_model(tiny_model_dir).named_parameters())
    pruned = dict(load_model(out).named_parameters())
    masks = load_masks(out)
    for name, keep in masks.items():
        k = keep_mask_layer(torch.zeros_like(keep, dtype=torch.float), 0.5)
        assert int((~keep).sum()) == int((~k).sum())  # exact per-layer count
        assert not torch.allclose(pruned[name].data[keep], base[name].data[keep])
    assert res.metrics["sparsity"] == pytest.approx(0.5)
    assert res.extra_manifest["calibration"]["nsamples"] == 8


def test_wanda_scope_validation():
    from pydantic import ValidationError

    from stages.prune.wanda import Params

    assert Params(model="m", calib="w").scope == "row"  # the paper's group
    with pytest.raises(ValidationError, match="scope"):
        Params(model="m", calib="w", pattern="2:4", scope="layer")


def test_missing_calibration_is_a_clear_error():
    from pipelines.spec import DeclarationError, validate

    stages = {
        "world": {"kind": "world"},
        "base": {"kind": "pretrain", "data": "world"},
        "p": {"kind": "prune", "method": "wanda", "model": "base"},
    }
    with pytest.raises(DeclarationError) as err:
        validate({"pipeline": "t", "stages": stages})
    assert [i.path for i in err.value.issues] == ["stages.p.calib"]
    assert "calibrate" in err.value.issues[0].message


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_block_runner_reproduces_hidden_states(tiny_model_dir, attn):
    """Captured block-0 inputs and kwargs, fed block by block in batches of 3,
    give the model's own hidden states (so calibration sees true activations)."""
    from stages.common.io import load_model
    from stages.prune.layerwise import BlockRunner

    model = load_model(tiny_model_dir)
    model.config._attn_implementation = attn
    ids = torch.randint(4, 100, (5, 16), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = model(ids, output_hidden_states=True, use_cache=False).hidden_states
    runner = BlockRunner(model, ids, "cpu", batch_size=3)
    torch.testing.assert_close(runner.inps, ref[0])
    for i in range(len(runner.layers)):
        outs = runner.forward(runner.load(i))
        runner.advance(i, outs)
        if i + 1 < len(runner.layers):  # the last entry is after the final norm
            torch.testing.assert_close(outs, ref[i + 1])
