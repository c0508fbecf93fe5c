"""Write a pruned model as an HF checkpoint, streaming ``model.safetensors``
one tensor at a time (the writer lives in :mod:`stages.common.stream`).

``save_pretrained`` would do the same work but first imports DeepSpeed (via
accelerate's ``unwrap_model``), about 130 MiB of resident memory that a
pruning process has no use for. The file written here loads with
``from_pretrained`` and ``safetensors.safe_open`` like any other.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.common.memory import release_pages
from stages.common.stream import (  # the streaming writer, shared with merge
    WEIGHTS_FILE,
    tensor_bytes,
    tensor_spec,
    write_safetensors,
)

__all__ = [
    "WEIGHTS_FILE",
    "checkpoint_state",
    "release_pages",
    "save_checkpoint",
    "tensor_bytes",
    "tensor_spec",
    "write_safetensors",
]


def checkpoint_state(model: Any) -> dict[str, Any]:
    """The tensors ``save_pretrained`` would write: the state dict without
    ignored keys and tied aliases, in the checkpoint's (unconverted) names."""
    from transformers.core_model_loading import revert_weight_conversion
    from transformers.modeling_utils import remove_tied_weights_from_state_dict

    state = model.state_dict()
    for key in getattr(model, "_keys_to_ignore_on_save", None) or ():
        state.pop(key, None)
    state = remove_tied_weights_from_state_dict(state, model)
    return revert_weight_conversion(model, state)


def save_checkpoint(model: Any, tokenizer: Any, out_dir: Path) -> None:
    """``config.json``, ``generation_config.json``, a streamed
    ``model.safetensors`` and the tokenizer, as ``save_pretrained`` lays them out.
    A tensor's pages are released chunk by chunk as they are written
    (:func:`release_pages`), so no whole tensor of the mapped checkpoint is
    resident at once: the model is not used after its save."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.config.dtype = str(model.dtype).removeprefix("torch.")
    model.config.architectures = [type(model).__name__]
    model.config.save_pretrained(str(out_dir))
    if model.can_generate() and getattr(model, "generation_config", None) is not None:
        model.generation_config.save_pretrained(str(out_dir))
    state = checkpoint_state(model)
    specs = {k: tensor_spec(v) for k, v in state.items()}

    def written(k: str, start: int, stop: int) -> None:  # those bytes are on disk
        release_pages(state[k], start, stop)
        if stop == specs[k][2]:  # the pages straddling chunk ends too
            release_pages(state[k])

    write_safetensors(
        out_dir / WEIGHTS_FILE,
        specs,
        lambda k: tensor_bytes(state[k]),
        metadata={"format": "pt"},
        written=written,
    )
    if tokenizer is not None:
        tokenizer.save_pretrained(str(out_dir))
