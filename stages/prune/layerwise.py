"""Block-by-block calibration: run calibration inputs through decoder block i,
let a method measure/prune it, then feed the (pruned) block's outputs to block
i+1 (the sequential scheme of SparseGPT, Frantar & Alistarh 2023, and Wanda,
Sun et al. 2023). Peak memory is one block on ``device`` plus two activation
tensors of shape (nsamples, seqlen, hidden); the model stays on CPU.
Right-padded samples (calibration records) carry a ``valid`` mask: only real
tokens feed the statistics.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import Any

from stages.prune.targets import decoder_layers


class _Stop(Exception):
    """Raised by the pre-hook on block 0 once its inputs are captured."""


def _first(out: Any) -> Any:
    return out[0] if isinstance(out, tuple | list) else out


def _to(obj: Any, device: Any) -> Any:
    import torch

    if isinstance(obj, torch.Tensor):
        return obj.to(device)
    if isinstance(obj, tuple | list):
        return type(obj)(_to(o, device) for o in obj)
    return obj


class BlockRunner:
    """Holds the calibration activations entering the current block.

    ``valid`` (n, T) bool marks real tokens of right-padded samples (None: all
    real); :meth:`tokens` keeps those of a batch's activations.
    """

    def __init__(
        self, model: Any, ids: Any, device: Any, batch_size: int, valid: Any = None
    ) -> None:
        import torch

        self.model = model
        self.layers = decoder_layers(model)
        self.device = torch.device(device)
        self.batch_size = batch_size
        self.valid = None if valid is None or bool(valid.all()) else valid
        if self.valid is not None:
            self.valid = self.valid.to(self.device)
        self._rows = slice(0, len(ids))  # the batch being forwarded
        self.inps, self.kwargs = self._capture(ids)

    def tokens(self, x: Any, rows: slice | None = None) -> Any:
        """(tokens, features) of activations ``x`` (B, T, F) of ``rows`` (default:
        the batch being forwarded), without padding."""
        if self.valid is None:
            return x.reshape(-1, x.shape[-1])
        return x[self.valid[rows or self._rows]]

    def _capture(self, ids: Any) -> tuple[Any, dict[str, Any]]:
        """Inputs of block 0 for every sequence, and the kwargs the decoder
        passes to its blocks (rotary embeddings, mask), captured at batch 1 so
        they broadcast over any batch."""
        import torch

        decoder = self.model.get_decoder()
        others = [c for c in decoder.children() if c is not self.layers]
        for c in others:
            c.to(self.device)
        inps: list[Any] = []  # filled into one preallocated tensor, no concat copy
        filled = [0]
        kwargs: dict[str, Any] = {}

        def hook(_mod: Any, args: tuple, kw: dict[str, Any]) -> None:
            x = args[0] if args else kw["hidden_states"]
            if not inps:
                shape = (len(ids), *x.shape[1:])
                inps.append(torch.empty(shape, dtype=x.dtype, device=self.device))
                kwargs.update({k: v for k, v in kw.items() if k != "hidden_states"})
            inps[0][filled[0]] = x[0]
            filled[0] += 1
            raise _Stop

        handle = self.layers[0].register_forward_pre_hook(hook, with_kwargs=True)
        try:
            with torch.no_grad():
                for row in ids:
                    with contextlib.suppress(_Stop):
                        self.model(row[None].to(self.device), use_cache=False)
        finally:
            handle.remove()
            for c in others:
                c.to("cpu")
        kwargs = {k: _to(v, self.device) for k, v in kwargs.items()}
        return inps[0], kwargs

    def load(self, i: int) -> Any:
        """Block ``i`` moved to the processing device."""
        return self.layers[i].to(self.device)

    def forward(self, block: Any, keep: bool = True) -> Any:
        """Outputs of ``block`` for all current inputs, in batches (None with
        ``keep=False``: a pass run only for its hooks holds no outputs)."""
        import torch

        outs = torch.empty_like(self.inps) if keep else None
        with torch.no_grad():
            for s in range(0, len(self.inps), self.batch_size):
                self._rows = slice(s, s + self.batch_size)
                y = _first(block(self.inps[self._rows], **self.kwargs))
                if outs is not None:
                    outs[self._rows] = y
                del y
        return outs

    def collect(
        self, block: Any, modules: dict[str, Any], make: Callable[[Any], Any]
    ) -> dict[str, Any]:
        """Run the block once with a forward hook on each module feeding its
        input (..., in_features) to an accumulator ``make(module)``; returns
        them by name."""
        accs = {name: make(mod) for name, mod in modules.items()}
        handles = [
            mod.register_forward_hook(
                lambda _m, inp, _out, a=accs[name]: a.add(self.tokens(inp[0].detach()))
            )
            for name, mod in modules.items()
        ]
        try:
            self.forward(block, keep=False)
        finally:
            for h in handles:
                h.remove()
        return accs

    def advance(self, i: int, outs: Any) -> None:
        """Make ``outs`` the next block's inputs; move block ``i`` back to CPU."""
        self.layers[i].to("cpu")
        self.inps = outs


def release_memory() -> None:
    """Hand freed heap memory back to the OS between blocks: glibc keeps freed
    block-sized temporaries in its arenas, which shows up as RSS growth."""
    import contextlib
    import ctypes
    import gc

    gc.collect()
    with contextlib.suppress(OSError, AttributeError):  # not glibc: nothing to trim
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def resolve_device(device: str) -> Any:
    """'auto' -> cuda when available, else cpu."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def prune_blockwise(
    model: Any,
    groups: list[dict[str, Any]],
    samples: tuple[Any, Any],
    params: Any,
    ctx: Any,
    make: Callable[[Any], Any],
    prune: Callable[[Any, Any, float], Any],
    desc: str,
    sparsities: list[float],
) -> dict[str, Any]:
    """Calibrate and prune each block's selected linears in turn.

    ``make(linear)`` builds an input-statistics accumulator; ``prune(weight,
    acc, sparsity)`` returns ``(new_weight, keep_mask)``, ``sparsity`` being
    ``sparsities[i]`` for block i (the profile's). ``samples`` is (ids, valid)
    from the calibration. Returns bit-packed keep-masks by module name.
    """
    import torch

    from stages.common.maskio import pack

    ids, valid = samples
    dev = resolve_device(params.device)
    runner = BlockRunner(model, ids, dev, params.batch_size, valid)
    masks: dict[str, Any] = {}
    for i in ctx.progress(range(len(runner.layers)), desc=desc):
        block = runner.load(i)
        if groups[i]:
            accs = runner.collect(block, groups[i], make)
            with torch.no_grad():
                for name, lin in groups[i].items():
                    w, keep = prune(lin.weight.data, accs.pop(name), sparsities[i])
                    lin.weight.data.copy_(w.to(lin.weight.dtype))
                    masks[name] = pack(keep)
        runner.advance(i, runner.forward(block))
        release_memory()
    return masks
