"""Tiny sparse Llama + tokenizer + instruction data, built in seconds on a CPU.

Shared by the recover tests and ``benchmarks/recover_*.py`` (which put this
folder on ``sys.path``)."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any


def records(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Arithmetic and reversal records in the world's record format."""
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


def tokenizer(recs: list[dict[str, Any]]) -> Any:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from stages.common.text import format_prompt, format_response

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<pad>", "<s>", "</s>", "<unk>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tk.train_from_iterator(
        [format_prompt(r) + format_response(r) for r in recs], trainer
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tk,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def magnitude_masks(model: Any, sparsity: float) -> dict[str, Any]:
    """Per-layer magnitude keep-masks of the decoder's linear weights."""
    import torch

    masks = {}
    for name, p in model.named_parameters():
        if p.ndim == 2 and ".layers." in name:
            k = int(p.numel() * sparsity)
            thr = p.detach().abs().flatten().kthvalue(k).values
            masks[name] = p.detach().abs() > thr
    with torch.no_grad():
        for name, keep in masks.items():
            dict(model.named_parameters())[name].masked_fill_(~keep, 0.0)
    return masks


def pretrain(
    model: Any,
    tok: Any,
    recs: list[dict[str, Any]],
    steps: int,
    batch: int = 16,
    lr: float = 3e-3,
) -> None:
    """A few AdamW steps so the dense model (the teacher) is not uniform."""
    import torch

    from stages.common.text import collate, encode_example
    from stages.recover.losses import response_nll

    ex = [encode_example(tok, r) for r in recs]
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
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


def build_world(
    root: Path,
    n_records: int = 96,
    hidden: int = 64,
    pretrain_steps: int = 40,
    layers: int = 2,
    sparsity: float = 0.5,
    seed: int = 0,
) -> dict[str, Path]:
    """Folders ``dense`` (teacher), ``sparse`` (+masks) and ``data``."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from stages.common.io import save_masks, save_model, write_dataset

    recs = records(n_records, seed)
    tok = tokenizer(recs)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=len(tok),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    model = LlamaForCausalLM(cfg)
    pretrain(model, tok, recs, steps=pretrain_steps)
    save_model(model, tok, root / "dense")
    masks = magnitude_masks(model, sparsity)
    save_model(model, tok, root / "sparse")
    save_masks(masks, root / "sparse")
    write_dataset(recs, root / "data", source="recover-test")
    return {"dense": root / "dense", "sparse": root / "sparse", "data": root / "data"}
