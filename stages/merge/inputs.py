"""Merge inputs: models read tensor by tensor from safetensors, and the checks
that run before any tensor is merged (architecture, tensor names and shapes,
tokenizer vocabulary), each naming the stage and the model that differs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

WEIGHTS = "model.safetensors"
INDEX = "model.safetensors.index.json"
MASKS = "masks.safetensors"
_TORCH_DTYPES = {
    "F64": "float64",
    "F32": "float32",
    "F16": "float16",
    "BF16": "bfloat16",
    "I64": "int64",
    "I32": "int32",
    "I16": "int16",
    "I8": "int8",
    "U8": "uint8",
    "BOOL": "bool",
}


class MergeError(ValueError):
    """An input that cannot be merged; the message names stage and model."""


class ModelSource:
    """One input model folder: tensor names, shapes and dtypes from the
    safetensors headers; tensors read one at a time.

    Each read opens the file with ``safe_open`` (a memory map) and closes it
    again, so the pages touched are unmapped after every tensor and the
    process's resident memory stays about one tensor per input."""

    def __init__(self, folder: Path, name: str) -> None:
        from safetensors import safe_open

        self.folder, self.name = Path(folder), name
        index = self.folder / INDEX
        if index.exists():
            wmap = json.loads(index.read_text())["weight_map"]
            self.files = {k: self.folder / v for k, v in wmap.items()}
        elif (self.folder / WEIGHTS).exists():
            with safe_open(str(self.folder / WEIGHTS), framework="pt") as f:
                self.files = dict.fromkeys(f.keys(), self.folder / WEIGHTS)
        else:
            raise MergeError(
                f"model '{name}' ({self.folder}): no {WEIGHTS} or {INDEX} "
                "(safetensors only; .bin checkpoints are refused)"
            )
        self.specs: dict[str, tuple[str, tuple[int, ...]]] = {}
        for file in sorted(set(self.files.values())):
            with safe_open(str(file), framework="pt") as f:
                for k in f.keys():  # noqa: SIM118 (safe_open is not iterable)
                    s = f.get_slice(k)
                    self.specs[k] = (s.get_dtype(), tuple(s.get_shape()))
        masks = self.folder / MASKS
        self.mask_names: set[str] = set()
        if masks.exists():
            with safe_open(str(masks), framework="pt") as f:
                self.mask_names = set(f.keys())

    @property
    def config(self) -> dict[str, Any]:
        f = self.folder / "config.json"
        return json.loads(f.read_text()) if f.exists() else {}

    def dtype(self, name: str) -> str:
        """torch dtype name of a stored tensor."""
        return _TORCH_DTYPES.get(self.specs[name][0], "float32")

    def read(self, name: str) -> Any:
        from safetensors import safe_open

        with safe_open(str(self.files[name]), framework="pt") as f:
            return f.get_tensor(name)

    def mask(self, name: str) -> Any:
        """Keep-mask (bool, True = kept) of a tensor, or None when dense."""
        if name not in self.mask_names:
            return None
        from safetensors import safe_open

        with safe_open(str(self.folder / MASKS), framework="pt") as f:
            return f.get_tensor(name).bool()

    def vocab(self) -> dict[str, int] | None:
        """The tokenizer's vocabulary (tokenizer.json), or None without one."""
        f = self.folder / "tokenizer.json"
        if not f.exists():
            return None
        from tokenizers import Tokenizer

        return Tokenizer.from_file(str(f)).get_vocab(with_added_tokens=True)


def _few(names: list[str]) -> str:
    more = f" (and {len(names) - 3} more)" if len(names) > 3 else ""
    return ", ".join(names[:3]) + more


def check_compatible(
    stage: str, ref: ModelSource, others: list[ModelSource]
) -> list[str]:
    """Raise :class:`MergeError` unless every model in ``others`` has ``ref``'s
    architecture, tensor names, shapes and tokenizer vocabulary; returns the
    tensor names (sorted)."""
    where = f"stage '{stage}'"
    arch = (ref.config.get("architectures"), ref.config.get("model_type"))
    vocab = ref.vocab()
    for src in others:
        if src is ref:
            continue
        differs = (
            f"{where}: model '{src.name}' ({src.folder}) differs from '{ref.name}'"
        )
        a = (src.config.get("architectures"), src.config.get("model_type"))
        if a != arch:
            raise MergeError(
                f"{differs}: architecture {a[0]}/{a[1]} vs {arch[0]}/{arch[1]}; "
                "only models of one architecture can be merged"
            )
        missing = sorted(set(ref.specs) - set(src.specs))
        extra = sorted(set(src.specs) - set(ref.specs))
        if missing or extra:
            parts = [f"lacks {_few(missing)}"] if missing else []
            parts += [f"has extra {_few(extra)}"] if extra else []
            raise MergeError(f"{differs}: tensors differ: it {'; '.join(parts)}")
        for name in sorted(ref.specs):
            if src.specs[name][1] != ref.specs[name][1]:
                raise MergeError(
                    f"{differs}: tensor {name} has shape {src.specs[name][1]}, "
                    f"'{ref.name}' has {ref.specs[name][1]}"
                )
        v = src.vocab()
        if vocab is not None and v is not None and v != vocab:
            diff = sorted(set(v.items()) ^ set(vocab.items()))
            raise MergeError(
                f"{differs}: tokenizer vocabularies differ ({len(v)} vs "
                f"{len(vocab)} tokens; first difference: {diff[0][0]!r}); token "
                "ids would not mean the same thing in the merged model"
            )
    return sorted(ref.specs)
