"""recover/lora: the merged update keeps the pruning mask bit for bit, and the
merged model computes what the masked adapter model computed."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipelines.contract import RunContext


def _weights(folder: Path):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def _perturbed_peft(tiny, **kw):
    import torch

    from stages.common.io import load_masks, load_model
    from stages.recover.lora import Params, wrap

    masks = load_masks(tiny["sparse"])
    params = Params(model="sparse", data="data", dropout=0.0, **kw)
    torch.manual_seed(0)
    peft_model = wrap(params, load_model(tiny["sparse"]), masks)
    with torch.no_grad():  # B starts at zero: give the update some mass
        for n, p in peft_model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    return peft_model.eval(), masks


def test_masked_merge_keeps_zeros_and_matches_masked_forward(tiny):
    import torch

    from stages.recover.lora import masked_merge

    peft_model, masks = _perturbed_peft(tiny)
    ids = torch.randint(4, 100, (2, 12))
    with torch.no_grad():
        trained = peft_model(input_ids=ids).logits
    merged = masked_merge(peft_model, masks)
    with torch.no_grad():
        after = merged(input_ids=ids).logits
    torch.testing.assert_close(after, trained, rtol=1e-4, atol=1e-5)
    named = dict(merged.named_parameters())
    for name, keep in masks.items():
        assert ((named[name] == 0) == ~keep).all(), name
        assert ((named[name] != 0) == keep).all(), name


def test_unmasked_forward_still_merges_under_the_mask(tiny):
    import torch

    from stages.recover.lora import masked_merge

    peft_model, masks = _perturbed_peft(tiny, masked_forward=False)
    ids = torch.randint(4, 100, (2, 12))
    with torch.no_grad():
        dense_update = peft_model(input_ids=ids).logits
    merged = masked_merge(peft_model, masks)
    named = dict(merged.named_parameters())
    assert all(((named[n] == 0) == ~k).all() for n, k in masks.items())
    with torch.no_grad():  # a dense ΔW was trained: merging under M changes it
        assert not torch.allclose(merged(input_ids=ids).logits, dense_update)


def test_lora_stage_keeps_mask_and_writes_adapter(tiny, tmp_path):
    from safetensors.torch import load_file

    from stages.common.io import load_masks
    from stages.recover import KIND, run
    from stages.recover.lora import Params

    params = Params(
        model="sparse",
        data="data",
        steps=4,
        rank=4,
        target_modules=["q_proj", "v_proj", "down_proj"],
        save_adapter=True,
    )
    assert KIND.outputs(params) == {"model", "adapter"}
    out = tmp_path / "out"
    out.mkdir()
    res = run(
        params, {"model": tiny["sparse"], "data": tiny["data"]}, out, RunContext()
    )
    before, after = _weights(tiny["sparse"]), _weights(out)
    masks = load_masks(tiny["sparse"])
    for name, keep in masks.items():
        assert ((after[name] == 0) == (before[name] == 0)).all(), name
        targeted = any(t in name for t in ("q_proj", "v_proj", "down_proj"))
        moved = (after[name][keep] != before[name][keep]).float().mean()
        assert moved > 0.99 if targeted else moved == 0, name
    adapter = load_file(str(out / "adapter" / "adapter_model.safetensors"))
    assert (out / "adapter" / "adapter_config.json").exists()
    lora_b = [v for k, v in adapter.items() if "lora_B" in k]
    assert len(lora_b) == 6 and all((b != 0).any() for b in lora_b)
    assert res.metrics["trainable_params"] < 0.2 * sum(
        v.numel() for v in before.values()
    )


def test_unknown_target_module_is_named(tiny):
    from stages.common.io import load_model
    from stages.recover.lora import Params, wrap

    params = Params(model="sparse", data="data", target_modules=["qkv_proj"])
    with pytest.raises(ValueError, match="target_modules"):
        wrap(params, load_model(tiny["sparse"]), {})


def test_two_four_pattern_survives_lora_merge(tiny, tmp_path):
    """N:M (2:4) input: after LoRA training and the merge, every block of 4
    consecutive input weights still holds exactly 2 non-zeros, the same 2."""
    import torch

    from stages.common.io import load_model, load_tokenizer, save_masks, save_model
    from stages.recover import run
    from stages.recover.lora import Params

    model = load_model(tiny["dense"])
    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and ".layers." in name:
                blocks = p.abs().reshape(p.shape[0], -1, 4)  # (out, in/4, 4)
                top = blocks.topk(2, dim=-1).indices
                keep = torch.zeros_like(blocks, dtype=torch.bool).scatter_(
                    -1, top, True
                )
                masks[name] = keep.reshape(p.shape)
                p.masked_fill_(~masks[name], 0.0)
    src = tmp_path / "nm"
    save_model(model, load_tokenizer(tiny["dense"]), src)
    save_masks(masks, src)
    out = tmp_path / "out"
    out.mkdir()
    run(
        Params(model="nm", data="data", steps=3, rank=4),
        {"model": src, "data": tiny["data"]},
        out,
        RunContext(),
    )
    w = _weights(out)
    for name, keep in masks.items():
        nz = (w[name] != 0).reshape(w[name].shape[0], -1, 4)
        assert (nz.sum(-1) == 2).all(), name
        assert torch.equal(nz.reshape(keep.shape), keep), name
