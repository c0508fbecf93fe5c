"""Block-by-block gradients (width's Taylor importance) equal one backward pass
of the mean next-token loss, padding ignored."""

from __future__ import annotations

import torch

torch.set_num_threads(1)


def test_blockwise_grads_equal_full_backward(tiny_model_dir):
    from stages.common.io import load_model
    from stages.prune.calib import pad_records
    from stages.prune.taylor import blockwise_grads

    model = load_model(tiny_model_dir)
    g = torch.Generator().manual_seed(0)
    seqs = [torch.randint(4, 100, (n,), generator=g).tolist() for n in (9, 16, 5)]
    ids, valid = pad_records(seqs, pad_id=0)
    labels = ids.masked_fill(~valid, -100)
    model.zero_grad()
    model(ids, labels=labels, use_cache=False).loss.backward()
    names = {id(p): n for n, p in model.named_parameters()}
    ref = {
        names[id(p)]: p.grad.clone()
        for blk in model.model.layers
        for p in blk.parameters()
    }
    model.zero_grad(set_to_none=True)
    got, order = {}, []

    def on_block(i, block):
        order.append(i)
        for p in block.parameters():
            got[names[id(p)]] = p.grad.clone()

    blockwise_grads(model, (ids, valid), 2, "cpu", on_block)
    assert order == [1, 0]
    assert got.keys() == ref.keys()
    for n in ref:
        torch.testing.assert_close(got[n], ref[n], rtol=1e-4, atol=1e-6)
    assert all(p.grad is None for p in model.parameters())  # nothing left behind
