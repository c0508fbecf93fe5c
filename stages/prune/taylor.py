"""Gradients of the mean next-token loss, one decoder block at a time, for
first-order Taylor importance |w * dL/dw| (width pruning; Ma et al. 2023).

A full backward pass holds every parameter's gradient and every block's
activations at once (6.7x the model's size on the 349M benchmark). Here the
calibration inputs of every block are kept (one (n, T, hidden) tensor each),
the loss gradient is taken at the last block's output through the final norm
and the LM head one sample at a time, and then each block, last to first, is
re-run on its inputs and backpropagated: its parameters hold their full
gradient (summed over all samples) while ``on_block`` reads them, and are
cleared before the next block. The gradients equal those of one backward pass
of the mean loss over all samples.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _head_grad(model: Any, x: Any, ids: Any, valid: Any, total: int) -> Any:
    """dL/dx at the last block's output, L = summed next-token cross-entropy
    over real targets / ``total``, one sample at a time (a (T, vocab) logits
    matrix at most)."""
    import torch

    norm = model.get_decoder().norm
    head = model.get_output_embeddings()
    g = torch.zeros_like(x)
    with torch.enable_grad():
        for s in range(len(x)):
            xs = x[s : s + 1].detach().requires_grad_()
            logits = head(norm(xs))[0, :-1]
            keep = valid[s, 1:]
            loss = torch.nn.functional.cross_entropy(
                logits[keep].float(), ids[s, 1:][keep], reduction="sum"
            )
            (gs,) = torch.autograd.grad(loss / total, xs)
            g[s] = gs[0]
    return g


def blockwise_grads(
    model: Any,
    samples: tuple[Any, Any],
    batch_size: int,
    device: Any,
    on_block: Callable[[int, Any], None],
    progress: Callable[..., Any] = lambda it, **_: it,
) -> None:
    """Call ``on_block(i, block)`` for every decoder block, last first, while
    the block's parameters hold the gradient of the mean next-token loss over
    ``samples`` = (ids, valid); padding is ignored."""
    import torch

    from stages.common.memory import release_pages
    from stages.prune.layerwise import BlockRunner, _first, release_memory

    def done_with(block: Any) -> None:  # its weights are read again from the file
        for p in block.parameters():
            release_pages(p.data)

    ids, valid = samples
    runner = BlockRunner(model, ids, device, batch_size, valid)
    ids, valid = ids.to(runner.device), valid.to(runner.device)
    n_layers = len(runner.layers)
    xs = [runner.inps]
    for i in range(n_layers):
        outs = runner.forward(runner.load(i))
        runner.advance(i, outs)
        done_with(runner.layers[i])
        xs.append(outs)
    total = int(valid[:, 1:].sum())
    model.get_decoder().norm.to(runner.device)
    model.get_output_embeddings().to(runner.device)
    g = _head_grad(model, xs.pop(), ids, valid, max(total, 1))
    model.get_decoder().norm.to("cpu")
    model.get_output_embeddings().to("cpu")
    for i in progress(reversed(range(n_layers)), desc="taylor grads", total=n_layers):
        block = runner.load(i)
        x_in = xs.pop()
        g_in = torch.empty_like(x_in)
        with torch.enable_grad():
            for s in range(0, len(x_in), batch_size):
                x = x_in[s : s + batch_size].detach().requires_grad_()
                out = _first(block(x, **runner.kwargs))
                torch.autograd.backward(out, g[s : s + batch_size])
                g_in[s : s + batch_size] = x.grad
        del x_in
        on_block(i, block)
        for p in block.parameters():
            p.grad = None
        block.to("cpu")
        done_with(block)
        g = g_in
        release_memory()
