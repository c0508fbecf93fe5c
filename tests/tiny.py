"""Tiny Llama models, tokenizers, instruction records and micro worlds: the one
builder every test and benchmark uses (as mergekit's ``tests/common.py``).

Everything is seeded, offline and built in seconds on one CPU core. Import it
as ``tests.tiny`` (the repo root is on ``sys.path``: pytest's ``pythonpath``
setting in tests, an explicit insert in benchmarks); never as bare ``tiny``,
which would load a second copy of the module.

* tokenizers: ``char_tokenizer`` (fixed 100-token vocab) and ``bpe_tokenizer``
  (byte-level BPE trained on given texts);
* models: ``llama_config`` / ``tiny_llama`` (seeded random init, optionally
  re-drawn larger so blocks visibly change the residual stream),
  ``magnitude_masks``, ``pretrain`` and ``write_checkpoint``;
* data: ``records`` (add / reverse instruction records), ``micro_world`` (the
  world stage's synthetic world at ``MICRO_WORLD`` size) and ``pruned_pair``
  (a pretrained dense teacher, its magnitude-pruned copy and the records).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from pathlib import Path
from typing import Any

SPECIALS = ["<pad>", "<s>", "</s>", "<unk>"]  # ids 0..3 in both tokenizers
CHAR_VOCAB = len(SPECIALS) + 95 + 1  # printable ASCII and "\n"
# ``tiny_llama(init_std=WIDE_INIT_STD)``: matrices well above HF's 0.02 init, so
# every block visibly changes the residual stream (the prune tests' models)
WIDE_INIT_STD = 0.15

# The synthetic world at its smallest useful size (a second to build); tests
# override single fields (``micro_world(out, eval_per_family=6)``).
MICRO_WORLD: dict[str, Any] = dict(
    pool_size=90,
    eval_per_family=4,
    pretrain_size=450,
    ppl_size=18,
    facts=6,
    vocab_size=400,
)


def _fast(tok: Any) -> Any:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def char_tokenizer() -> Any:
    """A 100-token character-level tokenizer: 4 specials (pad 0, bos 1, eos 2,
    unk 3), printable ASCII, then ``\\n``; adds no special tokens itself."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return _fast(tok)


def bpe_tokenizer(texts: Iterable[str], vocab_size: int = 300) -> Any:
    """A byte-level BPE tokenizer trained on ``texts`` (specials as in
    ``char_tokenizer``; the vocab may stay below ``vocab_size`` on little text)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIALS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(texts, trainer)
    return _fast(tok)


def record_texts(recs: Iterable[dict[str, Any]]) -> list[str]:
    """Prompt + response of each record, as the stages format them."""
    from stages.common.text import format_prompt, format_response

    return [format_prompt(r) + format_response(r) for r in recs]


def llama_config(
    tok: Any = None,
    *,
    vocab_size: int | None = None,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv_heads: int = 2,
    intermediate: int | None = None,
    max_positions: int = 128,
) -> Any:
    """A ``LlamaConfig`` with untied embeddings; vocab and special ids from
    ``tok`` (default: ``char_tokenizer``'s), intermediate size 2 x hidden."""
    from transformers import LlamaConfig

    ids = (
        (tok.bos_token_id, tok.eos_token_id, tok.pad_token_id)
        if tok is not None
        else (1, 2, 0)
    )
    return LlamaConfig(
        vocab_size=vocab_size or (len(tok) if tok is not None else CHAR_VOCAB),
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=max_positions,
        tie_word_embeddings=False,
        bos_token_id=ids[0],
        eos_token_id=ids[1],
        pad_token_id=ids[2],
    )


def tiny_llama(
    tok: Any = None, *, seed: int = 0, init_std: float | None = None, **dims: Any
) -> Any:
    """A random-init ``LlamaForCausalLM`` in eval mode (``dims``: the keyword
    arguments of ``llama_config``). ``init_std`` re-draws every matrix from
    N(0, init_std), larger than HF's init, so each block changes the stream."""
    import torch
    from transformers import LlamaForCausalLM

    cfg = llama_config(tok, **dims)
    torch.manual_seed(seed)
    model = LlamaForCausalLM(cfg).eval()
    if init_std is not None:
        with torch.no_grad():
            for p in model.parameters():
                if p.dim() == 2:
                    p.normal_(0, init_std)
    return model


def magnitude_masks(model: Any, sparsity: float) -> dict[str, Any]:
    """Zero the smallest ``sparsity`` of each decoder linear weight in place;
    returns the keep-masks (True = kept) by parameter name."""
    import torch

    masks = {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 2 and ".layers." in name:
                thr = p.abs().flatten().kthvalue(int(p.numel() * sparsity)).values
                masks[name] = p.abs() > thr
                p.masked_fill_(~masks[name], 0.0)
    return masks


def pretrain(
    model: Any,
    tok: Any,
    recs: list[dict[str, Any]],
    steps: int,
    batch: int = 16,
    lr: float = 3e-3,
) -> None:
    """A few AdamW steps on the records' responses, so the model is not uniform
    (a teacher worth distilling); leaves it in eval mode."""
    import torch

    from stages.common.text import collate, encode_example
    from stages.recover.losses import response_nll

    ex = [encode_example(tok, r) for r in recs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    model.train()
    for i in range(steps):
        b = collate(
            [ex[(i * batch + j) % len(ex)] for j in range(batch)], tok.pad_token_id
        )
        logits = model(
            input_ids=b["input_ids"], attention_mask=b["attention_mask"]
        ).logits
        response_nll(logits, b["labels"]).backward()
        opt.step()
        opt.zero_grad()
    model.eval()


def write_checkpoint(
    model: Any, tok: Any, folder: Path, masks: dict[str, Any] | None = None
) -> Path:
    """An HF checkpoint folder as the stages write it (config, safetensors,
    tokenizer; ``masks.safetensors`` for a sparse model); returns ``folder``."""
    from stages.common.io import save_masks, save_model

    save_model(model, tok, folder)
    if masks:
        save_masks(masks, folder)
    return folder


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Alternating reversal and addition records in the world's record format
    (``id``, ``family``, ``instruction``, ``input``, ``output``)."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if i % 2:
            rec = {
                "family": "add",
                "instruction": "Add the numbers.",
                "input": f"{a} + {b}",
                "output": str(a + b),
            }
        else:
            word = "".join(rng.choice("abcdefgh") for _ in range(rng.randint(3, 6)))
            rec = {
                "family": "reverse",
                "instruction": "Reverse the word.",
                "input": word,
                "output": word[::-1],
            }
        out.append({"id": f"r{i:05d}", **rec})
    return out


def micro_world(out: Path, seed: int = 0, **overrides: Any) -> Path:
    """The world stage's synthetic world at ``MICRO_WORLD`` size (plus
    ``overrides`` of its params, e.g. ``families``), written to ``out``; the
    seed reaches the stage as the engine passes it, in the run context."""
    from pipelines.contract import RunContext
    from stages.world import METHODS, run

    params = METHODS.load("synthetic").Params(**{**MICRO_WORLD, **overrides})
    out.mkdir(parents=True, exist_ok=True)
    run(params, {}, out, RunContext(seed=seed))
    return out


def world_tokenizer(world: Path) -> Any:
    """The tokenizer a world folder carries (trained on its text)."""
    from stages.common.io import load_tokenizer

    return load_tokenizer(world / "tokenizer")


def pruned_pair(
    root: Path,
    n_records: int = 96,
    hidden: int = 64,
    pretrain_steps: int = 40,
    layers: int = 2,
    sparsity: float = 0.5,
    seed: int = 0,
) -> dict[str, Path]:
    """Folders under ``root``: ``dense`` (a briefly pretrained teacher on a BPE
    tokenizer), ``sparse`` (its magnitude-pruned copy + masks) and ``data``."""
    from stages.common.io import write_dataset

    recs = records(n_records, seed)
    tok = bpe_tokenizer(record_texts(recs))
    model = tiny_llama(tok, seed=seed, hidden=hidden, layers=layers, max_positions=256)
    pretrain(model, tok, recs, steps=pretrain_steps)
    write_checkpoint(model, tok, root / "dense")
    write_checkpoint(model, tok, root / "sparse", magnitude_masks(model, sparsity))
    write_dataset(recs, root / "data", source="recover-test")
    return {"dense": root / "dense", "sparse": root / "sparse", "data": root / "data"}


# model type -> the config class's name and its extra fields: the causal LMs in
# the Llama layout that the architecture matrix runs through every stage
ARCHITECTURES: dict[str, tuple[str, dict[str, Any]]] = {
    "llama": ("LlamaConfig", {}),
    "mistral": ("MistralConfig", {}),
    "qwen2": ("Qwen2Config", {"tie_word_embeddings": True}),
    "qwen3": ("Qwen3Config", {"head_dim": 8}),
    "gemma2": ("Gemma2Config", {"head_dim": 8}),  # ties embeddings by default
    "phi3": ("Phi3Config", {}),  # fused qkv_proj and gate_up_proj
}


def tiny_causal_lm(arch: str, tok: Any = None, *, seed: int = 0, **dims: Any) -> Any:
    """A random-init causal LM of model type ``arch`` (``ARCHITECTURES``, or
    ``gpt2``), hidden 32, 2 blocks, 4 heads over 2 kv groups, eval mode."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM

    tok = tok if tok is not None else char_tokenizer()
    ids = {
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if arch == "gpt2":
        cfg = transformers.GPT2Config(
            vocab_size=len(tok), n_embd=32, n_layer=2, n_head=4, n_positions=128, **ids
        )
    else:
        name, extra = ARCHITECTURES[arch]
        size = {
            "vocab_size": len(tok),
            "hidden_size": 32,
            "intermediate_size": 64,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "num_key_value_heads": 2,
            "max_position_embeddings": 128,
        }
        cfg = getattr(transformers, name)(**{**size, **ids, **extra, **dims})
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg).eval()
