"""Model shapes for `carp plan`: parameter counts from a Llama-style config
(a ``config.json`` dict), the shapes each stage's output has, and the published
architectures of Llama-2 for checkpoints that are not on this machine."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}

# Published Llama-2 architectures (Touvron et al. 2023, Table 1; the
# config.json of meta-llama/Llama-2-{7,13,70}b-hf), so a plan can be made for a
# checkpoint that lives on another machine.
KNOWN: dict[str, dict[str, Any]] = {
    "llama-2-7b": {
        "hidden_size": 4096,
        "intermediate_size": 11008,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "float16",
    },
    "llama-2-13b": {
        "hidden_size": 5120,
        "intermediate_size": 13824,
        "num_hidden_layers": 40,
        "num_attention_heads": 40,
        "num_key_value_heads": 40,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "float16",
    },
    "llama-2-70b": {
        "hidden_size": 8192,
        "intermediate_size": 28672,
        "num_hidden_layers": 80,
        "num_attention_heads": 64,
        "num_key_value_heads": 8,
        "vocab_size": 32000,
        "max_position_embeddings": 4096,
        "torch_dtype": "float16",
    },
}


@dataclass(frozen=True)
class Shape:
    """What the estimators need to know about a decoder-only model."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    dtype: str = "float32"
    source: str = ""
    context: int = 0  # max_position_embeddings (0: unknown)

    @classmethod
    def from_config(cls, cfg: dict[str, Any], source: str = "") -> Shape:
        try:
            h = int(cfg["hidden_size"])
            heads = int(cfg["num_attention_heads"])
            return cls(
                hidden=h,
                intermediate=int(cfg["intermediate_size"]),
                layers=int(cfg["num_hidden_layers"]),
                heads=heads,
                kv_heads=int(cfg.get("num_key_value_heads") or heads),
                vocab=int(cfg["vocab_size"]),
                tied=bool(cfg.get("tie_word_embeddings", False)),
                dtype=str(cfg.get("torch_dtype") or cfg.get("dtype") or "float32"),
                source=source,
                context=int(cfg.get("max_position_embeddings") or 0),
            )
        except KeyError as e:
            raise ValueError(
                f"{source or 'model config'}: no {e.args[0]}; carp plan reads "
                "Llama-style configs (hidden_size, intermediate_size, ...)"
            ) from None

    @property
    def head_dim(self) -> int:
        return self.hidden // self.heads

    def linears(self) -> list[tuple[int, int]]:
        """(out, in) of every linear layer of one decoder block."""
        h, i, kv = self.hidden, self.intermediate, self.kv_heads * self.head_dim
        return [(h, h), (kv, h), (kv, h), (h, h), (i, h), (i, h), (h, i)]

    @property
    def layer_params(self) -> int:
        return sum(o * i for o, i in self.linears()) + 2 * self.hidden

    @property
    def embed_params(self) -> int:
        return self.vocab * self.hidden

    @property
    def params(self) -> int:
        heads = 1 if self.tied else 2
        return self.layers * self.layer_params + heads * self.embed_params + self.hidden

    @property
    def largest_module_params(self) -> int:
        """Largest single module (DeepSpeed's ZeRO-3 ``largest_layer_params``)."""
        return max(self.embed_params, max(o * i for o, i in self.linears()))

    def bytes(self, dtype: str | None = None) -> int:
        return self.params * DTYPE_BYTES.get(dtype or self.dtype, 4)

    def scaled(self, keep: float, layers: int | None = None) -> Shape:
        """A structurally pruned copy: ``keep`` of the MLP/attention width."""
        return replace(
            self,
            intermediate=max(1, round(self.intermediate * keep)),
            kv_heads=max(1, round(self.kv_heads * keep)),
            heads=max(1, round(self.heads * keep)),
            layers=self.layers if layers is None else layers,
        )


def config_of(path: str, root: Path) -> Shape | None:
    """The shape of a local checkpoint (its config.json), else of the published
    architecture its folder is named after (``/models/llama-2-7b``), else None."""
    folder = (root / Path(path).expanduser()).resolve()
    cfg = folder / "config.json"
    if cfg.is_file():
        return Shape.from_config(json.loads(cfg.read_text()), str(cfg))
    name = folder.name.lower().removesuffix("-hf")
    if name in KNOWN:
        return Shape.from_config(KNOWN[name], f"published {name} architecture")
    return None


def load_config_arg(value: str, root: Path) -> Shape:
    """``--model-config STAGE=VALUE``: a known name or a config.json path."""
    if value.lower() in KNOWN:
        return Shape.from_config(KNOWN[value.lower()], f"published {value}")
    p = (root / value).resolve()
    if p.is_dir():
        p = p / "config.json"
    if not p.is_file():
        raise ValueError(
            f"--model-config: {value} is neither a config.json nor one of "
            f"{', '.join(KNOWN)}"
        )
    return Shape.from_config(json.loads(p.read_text()), str(p))
