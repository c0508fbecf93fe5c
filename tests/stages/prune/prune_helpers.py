"""Builders for the prune tests: a tiny Llama, a char-level tokenizer, records."""

from __future__ import annotations

import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")


def char_tokenizer():
    """A 100-token character-level tokenizer (4 specials + printable ASCII + \\n)."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    chars = [chr(i) for i in range(32, 127)] + ["\n"]
    vocab = {t: i for i, t in enumerate(specials + chars)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
    )


def tiny_llama(
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    kv: int = 2,
    inter: int = 128,
    seed: int = 0,
):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=100,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv,
        max_position_embeddings=128,
        tie_word_embeddings=False,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
    )
    model = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():  # larger-than-init weights so blocks change the stream
        for p in model.parameters():
            if p.dim() == 2:
                p.normal_(0, 0.15)
    return model


def records(n: int = 200, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        a, b = rng.randrange(100), rng.randrange(100)
        fam = ["add", "reverse"][i % 2]
        if fam == "add":
            rec = {
                "instruction": "Add the numbers.",
                "input": f"{a} {b}",
                "output": str(a + b),
            }
        else:
            word = "".join(rng.choice("abcdefgh") for _ in range(5))
            rec = {
                "instruction": "Reverse the word.",
                "input": word,
                "output": word[::-1],
            }
        out.append({"id": f"r{i}", "family": fam, **rec})
    return out
